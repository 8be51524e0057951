"""Redis's own evidence next to each stall: where it agrees with the kernel's view, and where not.

Inputs: the INFO samples taken while tracing (kernel/info.py: latest_fork_usec, expired_keys,
evicted_keys, mem_fragmentation_ratio) and, at the end of diagnose/record, LATENCY LATEST and
SLOWLOG GET (decode/redis_log.py). For a stall (a StallVerdict, trace time) `for_stall` gives the
latency events and slow commands that fall in it, the INFO fields around it, and sentences saying
whether they agree with the stall's class.
"""
from __future__ import annotations

from collections import deque

from tracer.units import NS_PER_MS, NS_PER_S

NEAR_NS = NS_PER_S              # LATENCY LATEST keeps seconds: an event this close to a stall is its
SAMPLES_KEPT = 4096             # INFO samples kept per target (2 s apart: over two hours)
FORK_AGREE = 0.25               # a fork duration and latest_fork_usec within this share agree
SLOWLOG_LISTED = 5
COMMAND_CLASSES = ("bigkey", "lua", "keyspace")
OFFCPU_CLASSES = ("cpu-starved", "blocked")
LATENCY_EVENTS_OF = {"fork": ("fork",), "expiry": ("expire-cycle",), "eviction": ("eviction-cycle", "eviction-del"),
                     "aof": ("aof-fsync-always", "aof-write", "aof-write-active-child", "aof-write-alone",
                             "aof-write-pending-fsync")}


class RedisEvidence:
    """Per target: the INFO samples and Redis's latency log, joined with stalls on request."""

    def __init__(self):
        self.samples: dict = {}     # tgid -> deque of InfoAt, in time order
        self.logs: dict = {}        # tgid -> RedisLog (the last one asked)

    def on_info(self, info) -> None:
        self.samples.setdefault(info.tgid, deque(maxlen=SAMPLES_KEPT)).append(info)

    def on_log(self, log) -> None:
        self.logs[log.tgid] = log

    def _around(self, tgid: int, start: int, end: int):
        """(the last sample before start, the first sample after end) of a target, None where missing."""
        before = after = None
        for s in self.samples.get(tgid, ()):
            if s.ts <= start:
                before = s
            elif s.ts >= end:
                after = s
                break
        return before, after

    def for_stall(self, v) -> dict | None:
        """Redis's evidence for one StallVerdict, or None when there is none at all."""
        tgid, start, end = v.tgid, v.start_ts, v.end_ts
        log = self.logs.get(tgid)
        before, after = self._around(tgid, start, end)
        if log is None and before is None and after is None:
            return None
        out: dict = {"info": {}, "latency": [], "slowlog": [], "agree": [], "disagree": [], "notes": []}
        if after is not None:
            s = after.sample
            out["info"] = {"latest_fork_usec": s.latest_fork_usec,
                           "mem_fragmentation_ratio": s.mem_fragmentation_ratio}
            if before is not None:
                for name in ("expired_keys", "evicted_keys"):
                    a, b = getattr(before.sample, name), getattr(s, name)
                    if a is not None and b is not None:
                        out["info"][f"{name}_delta"] = b - a
        if log is not None:
            out["latency"] = [{"event": e.event, "latest_ms": e.latest_ms, "max_ms": e.max_ms}
                              for e in log.latency if start - NEAR_NS <= e.ts <= end + NEAR_NS]
            # an entry's end lies in [ts, ts + 1 s): it matches a stall its possible run overlaps
            slow = [e for e in log.slowlog if e.ts - e.duration_us * 1000 < end and e.ts + NS_PER_S > start]
            out["slowlog"] = [{"command": e.command, "key": e.key, "duration_ms": e.duration_us / 1000,
                               "client": e.client} for e in sorted(slow, key=lambda e: -e.duration_us)[:SLOWLOG_LISTED]]
            out["notes"] = list(log.notes)
            if not log.latency and log.latency_threshold_ms == 0:
                out["notes"].append("LATENCY records nothing: latency-monitor-threshold is 0")
        self._compare(v, out, log)
        return out

    def _compare(self, v, out: dict, log) -> None:
        cls, dur_ms = v.class_, v.duration_ms
        agree, disagree = out["agree"], out["disagree"]
        info, latency, slowlog = out["info"], out["latency"], out["slowlog"]
        fork_usec = info.get("latest_fork_usec")
        if cls == "fork":
            forks = (v.offcpu or {}).get("forks") or []
            ours = forks[0]["ms"] if forks else None
            if fork_usec is not None and ours:
                theirs = fork_usec / 1000
                words = f"INFO latest_fork_usec {theirs:.1f} ms, the traced fork {ours:.1f} ms"
                (agree if abs(theirs - ours) <= FORK_AGREE * max(theirs, ours) else disagree).append(words)
        for e in latency:
            words = f"LATENCY {e['event']} {e['latest_ms']} ms"
            if e["event"] == "command":
                (agree if cls in COMMAND_CLASSES else disagree).append(words)
                continue
            mine = [c for c, names in LATENCY_EVENTS_OF.items() if e["event"] in names]
            if mine:
                (agree if cls in mine else disagree).append(words + f" (points to {mine[0]})")
            else:
                out["notes"].append(words)
        slow_ms = sum(e["duration_ms"] for e in slowlog)
        if slowlog:
            top = slowlog[0]
            words = f"SLOWLOG {top['command']} {top['duration_ms']:.1f} ms"
            if cls in COMMAND_CLASSES and (not v.command or top["command"] == v.command.split(" ", 1)[0]):
                agree.append(words)
            elif cls in OFFCPU_CLASSES + ("fork",) and slow_ms >= 0.5 * dur_ms:
                disagree.append(words + ": Redis timed a command for most of the stall")
            else:
                out["notes"].append(words)
        elif log is not None and "SLOWLOG GET" not in " ".join(log.notes):
            if cls in OFFCPU_CLASSES + ("fork",):
                agree.append("SLOWLOG has no command in the stall: no command's execution took the time")
            elif cls in COMMAND_CLASSES and dur_ms >= 10:
                disagree.append(f"SLOWLOG has no {v.command or 'command'} in the stall (slowlog-log-slower-than"
                                " above it, or the time was not in its execution)")
        for name in ("expired_keys_delta", "evicted_keys_delta"):
            n = info.get(name)
            if n:
                out["notes"].append(f"INFO {name[:-6]} +{n} around the stall")
