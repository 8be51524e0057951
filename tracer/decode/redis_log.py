"""Redis's own record of its latency (LATENCY LATEST, SLOWLOG GET), as a REDIS record of the stream.

runtime/redis_collect.py asks the target at the end of a traced run; the answer travels as a REDIS
record (JSON payload), so a recording's report shows it too. Times are on the probes' clock
(CLOCK_MONOTONIC ns), turned from Redis's unix times with the offset measured at collection.

SLOWLOG arguments are never kept: only the command's name when Redis knows it, and its key when the
key spec puts one at a fixed place (decode/keyspec.py), masked like every key display.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from tracer.decode.keyspec import K_AT, KNOWN, lookup, show
from tracer.kernel import events

SLOWLOG_ENTRIES = 128
PAYLOAD_MAX = 256 * 1024    # bytes of a payload read back (a hostile recording cannot make it more)


@dataclass(frozen=True, slots=True)
class LatencyEvent:
    """LATENCY LATEST: an event's latest spike (the probes' clock) and its worst since reset."""

    event: str
    ts: int
    latest_ms: int
    max_ms: int


@dataclass(frozen=True, slots=True)
class SlowEntry:
    """SLOWLOG GET: one command slower than slowlog-log-slower-than, logged at ts (the probes' clock): Redis
    stamps an entry in whole unix seconds after the command ran, so it ended within a second after ts."""

    ts: int
    duration_us: int
    command: str
    key: str | None
    client: str


@dataclass(frozen=True, slots=True)
class RedisLog:
    tgid: int = 0
    ts: int = 0                 # when it was asked (the probes' clock)
    latency: list = field(default_factory=list)     # [LatencyEvent]
    slowlog: list = field(default_factory=list)     # [SlowEntry]
    latency_threshold_ms: int | None = None         # latency-monitor-threshold (0: LATENCY records nothing)
    notes: list = field(default_factory=list)       # what could not be asked, and why


def text_of(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def slow_entry(entry, to_mono) -> SlowEntry:
    """One SLOWLOG GET entry (redis-py's parsed dict), its arguments reduced to name and key."""
    args = [a if isinstance(a, bytes) else str(a).encode() for a in (entry.get("command") or b"").split(b" ")] \
        if isinstance(entry.get("command"), bytes) else []
    name = args[0].upper() if args else b""
    command = name.decode() if name in KNOWN else "?"
    key = None
    spec = lookup(name) if command != "?" else None
    if spec is not None and spec.kind == K_AT and spec.simple and spec.pos < len(args):
        key = show(args[spec.pos])
    return SlowEntry(ts=to_mono(int(entry.get("start_time", 0))),
                     duration_us=int(entry.get("duration", 0)), command=command, key=key,
                     client=text_of(entry.get("client_address", b"")))


def redis_log_record(log: RedisLog) -> bytes:
    """The answer as a REDIS record, to be fed and recorded with the stream."""
    payload = json.dumps(asdict(log), separators=(",", ":")).encode()
    return events.encode(events.Event(kind=events.REDIS, ts_enter=log.ts, ts_exit=log.ts, tgid=log.tgid,
                                      tid=log.tgid, payload=payload))


def redis_log_of(ev: events.Event) -> RedisLog:
    """What a REDIS record (decoded) carries; a malformed payload reads as a note."""
    try:
        doc = json.loads(bytes(ev.payload[:PAYLOAD_MAX]))
        threshold = doc.get("latency_threshold_ms")
        # every field converted to its type: a hostile recording gets a note, never a traceback later
        return RedisLog(tgid=ev.tgid, ts=ev.ts_exit,
                        latency=[LatencyEvent(str(e["event"]), int(e["ts"]), int(e["latest_ms"]), int(e["max_ms"]))
                                 for e in doc.get("latency", [])],
                        slowlog=[SlowEntry(int(e["ts"]), int(e["duration_us"]), str(e["command"]),
                                           None if e.get("key") is None else str(e["key"]), str(e["client"]))
                                 for e in doc.get("slowlog", [])],
                        latency_threshold_ms=None if threshold is None else int(threshold),
                        notes=[str(n) for n in doc.get("notes", [])])
    except (ValueError, TypeError, AttributeError, KeyError):
        return RedisLog(tgid=ev.tgid, ts=ev.ts_exit, notes=["Redis's evidence in this recording is unreadable"])
