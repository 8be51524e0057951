"""Stalls: long main-thread busy spans, joined with the requests and file syncs around them.

A stall is a BusySpan lasting at least stall_ms. For each one:

* in-span requests: executed on the main thread inside the span (exec interval overlapping it;
  without exec timestamps: read on the main thread, read_end inside the span);
* culprits: the in-span requests of the connections whose execution covers >= 10 % of the span
  (or, if none does, of the connection with the most execution; if nothing was timed, all of
  them). The main culprit is the longest execution (the latest read when nothing was timed);
* victims: requests of other connections whose bytes arrived during the span (they could only
  be read after it: added = min(end, reply start) - max(start, arrival)), plus in-span requests
  of other connections that waited on a culprit's execution in the same loop iteration
  (added = culprit execution between their wake-up and their reply);
* class, with evidence strings: aof, bigkey, lua, keyspace, not-redis, unknown.

The LOOP record arrives at the next epoll entry, culprits usually before it and victims after:
each stall takes requests from a bounded lookback when it opens and stays open, joining new
requests and syncs, until trace time passes its end + 2 s (or finish()).
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque

from tracer.analyze.advice import advice_for

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
JOIN_NS = 2 * NS_PER_S            # stalls stay open this long after their end for victims
LOOKBACK_NS = 5 * NS_PER_S        # recent requests kept for culprits that completed before the span record
LOOKBACK_MAX = 50_000
SYNC_LOOKBACK_MAX = 10_000
ORDER_SLACK_NS = NS_PER_S         # tolerated disorder of completion times in the lookback
BIG_REPLY_BYTES = 1_000_000       # a reply of >= 1 MB marks a big key
CLASS_SHARE = 0.5                 # a class must explain at least this share of the span
AOF_SHARE = 0.5
CULPRIT_CONN_SHARE = 0.1
MAX_INSPAN = 2_000                # requests kept per stall; beyond, only those executing >= 1 % of the
MAX_HEAVY = 500                   # span are kept (at most MAX_HEAVY), the rest are aggregated
MAX_SYNCS = 1_000
MAX_OPEN = 64
MAX_DONE = 1_000                  # finished stalls kept (the longest)
MAX_CULPRITS_LISTED = 5

LUA_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO",
                          "SCRIPT LOAD", "FUNCTION LOAD"})
KEYSPACE_COMMANDS = frozenset({"KEYS", "FLUSHALL", "FLUSHDB", "SCAN"})
# O(N) in the size of one key (UNLINK is not: it frees big values on a background thread)
BIGKEY_COMMANDS = frozenset({
    "DEL", "HGETALL", "HKEYS", "HVALS", "SMEMBERS", "SUNION", "SINTER", "SDIFF", "SUNIONSTORE",
    "SINTERSTORE", "SDIFFSTORE", "LRANGE", "LREM", "LTRIM", "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE",
    "ZREVRANGEBYSCORE", "ZRANGEBYLEX", "ZREMRANGEBYSCORE", "ZREMRANGEBYRANK", "ZUNIONSTORE",
    "ZINTERSTORE", "SORT", "DUMP", "RESTORE", "RENAME", "MIGRATE",
})
CLASS_PRIORITY = ("bigkey", "lua", "keyspace")


def base_command(name: str | None) -> str:
    return (name or "?").split(" ", 1)[0].upper()


def command_class(req) -> str | None:
    """Stall class implied by a request's command (or reply size); None for O(1)/unknown cost."""
    name = (req.command or "?").upper()
    base = name.split(" ", 1)[0]
    if base in LUA_COMMANDS or name in LUA_COMMANDS:
        return "lua"
    if base in ("FLUSHALL", "FLUSHDB"):
        return None if str(req.key or "").upper() == "ASYNC" else "keyspace"
    if base in KEYSPACE_COMMANDS:
        return "keyspace"
    if base in BIGKEY_COMMANDS or (req.reply_bytes or 0) >= BIG_REPLY_BYTES:
        return "bigkey"
    return None


def request_ts(req) -> int:
    """When a request was last touched (its completion), for ordering and the lookback."""
    return req.reply_end_ts or req.read_end_ts or req.arrival_ts or req.read_start_ts


def _ms(ns) -> float:
    return round(ns / NS_PER_MS, 3)


def _fmt_ms(ns) -> str:
    return f"{ns / NS_PER_MS:.3f}".rstrip("0").rstrip(".") + " ms"


def _pct(part, whole) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "?%"


def _fmt_bytes(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1_000:
        return f"{n / 1_000:.1f} kB"
    return f"{n} B"


class _Intervals:
    """Union of intervals, for 'how much of [a, b) is covered' in O(log n)."""

    __slots__ = ("starts", "ends", "prefix")

    def __init__(self, intervals):
        merged: list[list[int]] = []
        for a, b in sorted(intervals):
            if b <= a:
                continue
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.starts = [a for a, _ in merged]
        self.ends = [b for _, b in merged]
        self.prefix = [0]
        for a, b in merged:
            self.prefix.append(self.prefix[-1] + b - a)

    def covered(self, a: int, b: int) -> int:
        if b <= a or not self.starts:
            return 0
        i = bisect_right(self.ends, a)     # first interval ending after a
        j = bisect_left(self.starts, b)    # intervals [0, j) start before b
        if i >= j:
            return 0
        total = self.prefix[j] - self.prefix[i]
        if self.starts[i] < a:
            total -= a - self.starts[i]
        if self.ends[j - 1] > b:
            total -= self.ends[j - 1] - b
        return max(0, total)


class Stall:
    """One long busy span being joined with requests and syncs."""

    __slots__ = ("tgid", "start", "end", "seq", "inspan", "inspan_total", "heavy", "over_conn_exec",
                 "over_cmds", "io_reads", "arrivals", "syncs", "syncs_total", "version", "_cached")

    def __init__(self, span, seq: int = 0):
        self.tgid = span.tgid
        self.start = span.start_ts
        self.end = span.end_ts
        self.seq = seq
        self.inspan: list = []          # requests executed on the main thread in the span (capped)
        self.inspan_total = 0
        self.heavy: list = []           # beyond MAX_INSPAN: requests with a long execution
        self.over_conn_exec: dict = {}  # beyond MAX_INSPAN, the rest: conn_id -> exec ns in the span
        self.over_cmds: dict = {}       # and command -> [count, exec ns]
        self.io_reads = 0               # read by IO threads in the span, execution not timed
        self.arrivals: dict = {}        # conn_id -> [n, added_total_ns, added_max_ns] (bytes arrived in the span)
        self.syncs: list = []           # FileSyncs of this process overlapping the span (capped)
        self.syncs_total = 0
        self.version = 0                # bumped by every change, for the cached verdict
        self._cached = None

    @property
    def duration_ns(self) -> int:
        return max(0, self.end - self.start)

    def _overlap(self, a: int, b: int) -> int:
        return max(0, min(b, self.end) - max(a, self.start))

    # -- joining ----------------------------------------------------------------------------
    def offer(self, req) -> None:
        if req.tgid != self.tgid:
            return
        s, e = self.start, self.end
        xs, xe = req.exec_start_ts, req.exec_end_ts
        if xs and xe:
            if xs < e and (xe > s or xs >= s):
                self._add_inspan(req)
                return
        elif req.read_end_ts and s <= req.read_end_ts < e:
            if req.thread == req.tgid:
                self._add_inspan(req)
                return
            self.io_reads += 1
            self.version += 1
        arrival = req.arrival_ts
        if not arrival:
            rs = req.read_start_ts
            arrival = rs if s <= rs < e else 0
        if arrival and s <= arrival < e:
            done = req.reply_start_ts or req.reply_end_ts or e
            added = max(0, min(e, done) - max(s, arrival))
            self.version += 1
            agg = self.arrivals.get(req.conn_id)
            if agg is None:
                self.arrivals[req.conn_id] = [1, added, added]
            else:
                agg[0] += 1
                agg[1] += added
                if added > agg[2]:
                    agg[2] = added

    def _add_inspan(self, req) -> None:
        self.version += 1
        self.inspan_total += 1
        if len(self.inspan) < MAX_INSPAN:
            self.inspan.append(req)
            return
        x = self._overlap(req.exec_start_ts, req.exec_end_ts) if req.exec_end_ts else 0
        if x * 100 >= self.duration_ns and len(self.heavy) < MAX_HEAVY:
            self.heavy.append(req)
            return
        self.over_conn_exec[req.conn_id] = self.over_conn_exec.get(req.conn_id, 0) + x
        agg = self.over_cmds.setdefault((req.command or "?").upper(), [0, 0])
        agg[0] += 1
        agg[1] += x

    def offer_sync(self, sync) -> None:
        if sync.tgid != self.tgid:
            return
        if sync.start_ts < self.end and (sync.end_ts > self.start or sync.start_ts >= self.start):
            self.version += 1
            self.syncs_total += 1
            if len(self.syncs) < MAX_SYNCS:
                self.syncs.append(sync)

    # -- the verdict ------------------------------------------------------------------------
    def compute(self) -> dict:
        """The stall's diagnosis (timestamps in ns; see format_stall), cached until the next change.
        The dict is shared: do not modify it."""
        if self._cached is not None and self._cached[0] == self.version:
            return self._cached[1]
        result = self._compute()
        self._cached = (self.version, result)
        return result

    def _compute(self) -> dict:
        s, e = self.start, self.end
        dur = max(1, e - s)
        ov = self._overlap

        # execution units: a pipelined batch whose execution was inferred (split evenly) is one unit
        units: list[dict] = []
        by_key: dict = {}
        for i, r in enumerate(self.inspan + self.heavy):
            timed = bool(r.exec_start_ts and r.exec_end_ts)
            if timed and r.exec_source != "uprobe" and r.batch > 1:
                key = ("batch", r.conn_id, r.read_end_ts)
            else:
                key = ("req", i)
            u = by_key.get(key)
            if u is None:
                u = {"conn": r.conn_id, "members": [], "exec": 0, "timed": False, "order": i}
                by_key[key] = u
                units.append(u)
            u["members"].append(r)
            if timed:
                u["timed"] = True
                u["exec"] += ov(r.exec_start_ts, r.exec_end_ts)

        timed_any = any(u["timed"] for u in units) or any(self.over_conn_exec.values())
        conn_exec: dict = {}
        conn_order: dict = {}
        for u in units:
            conn_exec[u["conn"]] = conn_exec.get(u["conn"], 0) + u["exec"]
            conn_order.setdefault(u["conn"], u["order"])
        for c, x in self.over_conn_exec.items():
            conn_exec[c] = conn_exec.get(c, 0) + x
            conn_order.setdefault(c, len(self.inspan) + len(self.heavy))
        if not conn_exec:
            culprit_conns = set()
        elif timed_any:
            culprit_conns = {c for c, t in conn_exec.items() if t > 0 and t >= CULPRIT_CONN_SHARE * dur}
            if not culprit_conns:
                culprit_conns = {max(conn_exec, key=lambda c: (conn_exec[c], -conn_order[c]))}
        else:
            culprit_conns = set(conn_exec)
        culprit_units = [u for u in units if u["conn"] in culprit_conns]

        def unit_class(u):
            classes = {command_class(m) for m in u["members"]} - {None}
            return classes.pop() if len(classes) == 1 else None

        def unit_rep(u):
            cls = unit_class(u)
            if cls is not None:
                for m in u["members"]:
                    if command_class(m) == cls:
                        return m
            return max(u["members"], key=lambda m: (ov(m.exec_start_ts, m.exec_end_ts) if m.exec_end_ts else 0))

        main = None
        main_unit = None
        if culprit_units:
            if timed_any:
                main_unit = max(culprit_units, key=lambda u: (u["exec"], -u["order"]))
                main = unit_rep(main_unit)
            else:
                main = max((m for u in culprit_units for m in u["members"]),
                           key=lambda m: (m.read_end_ts, m.read_start_ts))

        # file syncs
        main_syncs = [x for x in self.syncs if x.main_thread]
        sync_ns = sum(ov(x.start_ts, x.end_ts) for x in main_syncs)
        bg_syncs = [x for x in self.syncs if not x.main_thread and x.op != "aof-write"]

        # how much of the span each command class explains
        class_ns = {c: 0 for c in CLASS_PRIORITY}
        class_cmds: dict = {c: {} for c in CLASS_PRIORITY}   # class -> name -> [n, ns, example request]
        for u in culprit_units:
            cls = unit_class(u)
            if cls is None or not u["timed"]:
                continue
            extra = 0
            if cls == "bigkey":
                for m in u["members"]:
                    if m.reply_bytes >= BIG_REPLY_BYTES and m.reply_thread == m.tgid and m.reply_start_ts:
                        extra += ov(m.reply_start_ts, m.reply_end_ts)
            class_ns[cls] += u["exec"] + extra
            rep = unit_rep(u)
            name = (rep.command or "?").upper()
            agg = class_cmds[cls].setdefault(name, [0, 0, rep])
            agg[0] += 1
            agg[1] += u["exec"] + extra
            if ov(rep.exec_start_ts, rep.exec_end_ts) > ov(agg[2].exec_start_ts, agg[2].exec_end_ts):
                agg[2] = rep
        best = max(CLASS_PRIORITY, key=lambda c: (class_ns[c], -CLASS_PRIORITY.index(c)))

        evidence: list[str] = []
        if sync_ns >= AOF_SHARE * dur:
            cls = "aof"
            for x in sorted(main_syncs, key=lambda x: (-ov(x.start_ts, x.end_ts), x.start_ts))[:3]:
                what = (f"AOF write of {_fmt_bytes(x.nbytes)}" if x.op == "aof-write" else x.op)
                evidence.append(f"main-thread {what} on fd {x.fd} took {_fmt_ms(x.duration_ns)}"
                                f" ({_pct(ov(x.start_ts, x.end_ts), dur)} of the {_fmt_ms(dur)} stall)")
            if len(main_syncs) > 1:
                evidence.append(f"{len(main_syncs)} main-thread file syncs/AOF writes covered {_fmt_ms(sync_ns)}"
                                f" ({_pct(sync_ns, dur)} of the stall)")
        elif class_ns[best] >= CLASS_SHARE * dur:
            cls = best
            items = sorted(class_cmds[cls].items(), key=lambda kv: (-kv[1][1], kv[0]))
            for name, (n, ns, ex) in items[:3]:
                key = f" key '{ex.key}'" if ex.key is not None else ""
                who = f" from {ex.client}" if ex.client else ""
                if n == 1:
                    evidence.append(f"{name}{key}{who} ran {_fmt_ms(ns)} on the main thread"
                                    f" ({_pct(ns, dur)} of the {_fmt_ms(dur)} stall)")
                else:
                    evidence.append(f"{n} x {name} (e.g.{key}{who}) ran {_fmt_ms(ns)} in total on the main thread"
                                    f" ({_pct(ns, dur)} of the {_fmt_ms(dur)} stall)")
                if ex.reply_bytes >= BIG_REPLY_BYTES:
                    evidence.append(f"{name} replied {_fmt_bytes(ex.reply_bytes)} (>= 1 MB)")
            if main_unit is not None and len(main_unit["members"]) > 1:
                names = sorted({(m.command or "?").upper() for m in main_unit["members"]})
                evidence.append(f"execution time inferred for a pipelined batch of {len(main_unit['members'])}"
                                f" commands ({', '.join(names[:5])}); attributed to {(main.command or '?').upper()},"
                                f" the batch's only {cls} command")
        elif not self.inspan_total and not self.io_reads and not main_syncs:
            cls = "not-redis"
            evidence.append(f"main thread busy {_fmt_ms(dur)} without a traced command:"
                            " serverCron/expiry/eviction or off-CPU")
        else:
            cls = "unknown"
            if self.inspan_total:
                per: dict = {}
                for u in units:
                    for m in u["members"]:
                        name = (m.command or "?").upper()
                        a = per.setdefault(name, [0, 0])
                        a[0] += 1
                        if m.exec_start_ts and m.exec_end_ts:
                            a[1] += ov(m.exec_start_ts, m.exec_end_ts)
                for name, (n, ns) in self.over_cmds.items():
                    a = per.setdefault(name, [0, 0])
                    a[0] += n
                    a[1] += ns
                parts = [f"{name} x{n} ({_fmt_ms(ns)})" for name, (n, ns) in
                         sorted(per.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:8]]
                more = f" ({self.inspan_total} in all)" if len(per) > 8 else ""
                evidence.append(f"commands executed in the stall: {', '.join(parts)}{more}")
                if not timed_any:
                    evidence.append("their execution was not timed (no exec timestamps)")
                elif class_ns[best]:
                    evidence.append(f"{best} commands explain only {_fmt_ms(class_ns[best])}"
                                    f" ({_pct(class_ns[best], dur)}) of the stall")
            if self.io_reads:
                evidence.append(f"{self.io_reads} commands read by IO threads during the stall (execution not timed)")
            if main_syncs:
                evidence.append(f"main-thread file syncs/AOF writes: {len(main_syncs)} covering {_fmt_ms(sync_ns)}"
                                f" ({_pct(sync_ns, dur)})")
            accounted = sum(u["exec"] for u in units) + sum(self.over_conn_exec.values()) + sync_ns
            evidence.append(f"{_fmt_ms(max(0, dur - accounted))} of the {_fmt_ms(dur)} stall not accounted for"
                            " by traced commands or file syncs")
        for x in sorted(bg_syncs, key=lambda x: (-x.duration_ns, x.start_ts))[:2]:
            evidence.append(f"background {x.op} on thread {x.tid} overlapped {_fmt_ms(ov(x.start_ts, x.end_ts))}")

        # victims
        culprit_exec = _Intervals([(max(m.exec_start_ts, s), min(m.exec_end_ts, e))
                                   for u in culprit_units for m in u["members"]
                                   if m.exec_start_ts and m.exec_end_ts])
        n_victims = 0
        added_total = 0
        added_max = 0
        victim_conns = set()
        for conn, (n, tot, mx) in self.arrivals.items():
            if conn in culprit_conns:
                continue
            n_victims += n
            added_total += tot
            added_max = max(added_max, mx)
            victim_conns.add(conn)
        for u in units:
            if u["conn"] in culprit_conns:
                continue
            for r in u["members"]:
                ready = max(s, r.arrival_ts) if r.arrival_ts else max(s, r.wake_ts or r.read_start_ts or s)
                done = min(e, r.reply_start_ts or r.reply_end_ts or e)
                added = culprit_exec.covered(ready, done)
                if added > 0:
                    n_victims += 1
                    added_total += added
                    added_max = max(added_max, added)
                    victim_conns.add(r.conn_id)
        if n_victims:
            evidence.append(f"{n_victims} requests from {len(victim_conns)} other connections waited,"
                            f" up to {_fmt_ms(added_max)} each")

        culprits = sorted((m for u in culprit_units for m in u["members"]),
                          key=lambda m: (-(ov(m.exec_start_ts, m.exec_end_ts) if m.exec_end_ts else 0),
                                         m.read_start_ts, m.conn_id))
        advice_cmds = [main.command] if main is not None else []
        if cls in class_cmds:
            advice_cmds += [name for name, _ in sorted(class_cmds[cls].items(), key=lambda kv: (-kv[1][1], kv[0]))]
        big_reply = any(m.reply_bytes >= BIG_REPLY_BYTES for m in culprits)
        return {
            "start_ts": s, "end_ts": e, "seq": self.seq,
            "duration_ms": _ms(e - s),
            "command": (main.command or "?").upper() if main is not None else "",
            "key": main.key if main is not None else None,
            "client": (main.client or "") if main is not None else "",
            "victims": n_victims,
            "victim_added_ms": _ms(added_max),
            "victim_added_total_ms": _ms(added_total),
            "victim_added_mean_ms": _ms(added_total / n_victims) if n_victims else 0.0,
            "class": cls,
            "evidence": evidence,
            "advice": advice_for(cls, advice_cmds, big_reply=big_reply and cls == "bigkey"),
            "culprits": [{"command": (m.command or "?").upper(), "key": m.key, "client": m.client or "",
                          "exec_ms": _ms(ov(m.exec_start_ts, m.exec_end_ts)) if m.exec_end_ts else None,
                          "reply_bytes": m.reply_bytes}
                         for m in culprits[:MAX_CULPRITS_LISTED]],
        }


def format_stall(result: dict, first_ts: int, open_: bool | None = None) -> dict:
    """A computed stall as reported: report schema fields first, then the extras."""
    base = first_ts or result["start_ts"]
    out = {
        "start_s": round(max(0, result["start_ts"] - base) / NS_PER_S, 3),
        "duration_ms": result["duration_ms"],
        "command": result["command"],
        "key": result["key"],
        "client": result["client"],
        "victims": result["victims"],
        "victim_added_ms": result["victim_added_ms"],
        "end_s": round(max(0, result["end_ts"] - base) / NS_PER_S, 3),
        "class": result["class"],
        "evidence": list(result["evidence"]),
        "advice": list(result["advice"]),
        "culprits": [dict(c) for c in result["culprits"]],
        "victim_added_total_ms": result["victim_added_total_ms"],
        "victim_added_mean_ms": result["victim_added_mean_ms"],
    }
    if open_ is not None:
        out["open"] = open_
    return out


def _stall_order(result: dict):
    return (-result["end_ts"] + result["start_ts"], result["start_ts"], result["seq"])


class StallDetector:
    """Finds stalls among busy spans and joins them with requests and file syncs, in bounded memory."""

    def __init__(self, stall_ms: float = 50, join_s: float = JOIN_NS / NS_PER_S, lookback_s: float = 5.0,
                 lookback_max: int = LOOKBACK_MAX, max_stalls: int = MAX_DONE, on_stall=None):
        self.stall_ns = int(stall_ms * NS_PER_MS)
        self.join_ns = int(join_s * NS_PER_S)
        self.lookback_ns = int(lookback_s * NS_PER_S)
        self.lookback_max = lookback_max
        self.max_stalls = max_stalls
        self.on_stall = on_stall            # called with each finished result dict
        self.lookback: deque = deque()      # (completion ts, request) of recent requests
        self.sync_lookback: deque = deque()
        self.open: list[Stall] = []         # in span-record order
        self.done: list[dict] = []          # finished results (longest max_stalls kept)
        self.recent: deque = deque(maxlen=10)
        self.stalls_total = 0
        self.dropped = 0                    # finished stalls beyond max_stalls (shortest dropped)
        self.now = 0

    # -- input --------------------------------------------------------------------------------
    def on_request(self, req, ts: int | None = None) -> None:
        if self.open:
            for st in self.open:
                st.offer(req)
        t = request_ts(req) if ts is None else ts
        lookback = self.lookback
        lookback.append((t, req))
        if t > self.now:
            self.now = t
            if self.open and self.open[0].end + self.join_ns < t:
                self.advance(t)
        limit = self.now - self.lookback_ns
        while lookback and (len(lookback) > self.lookback_max or lookback[0][0] < limit):
            lookback.popleft()

    def on_sync(self, sync) -> None:
        for st in self.open:
            st.offer_sync(sync)
        self.sync_lookback.append(sync)
        self.advance(sync.end_ts)
        self._prune(self.sync_lookback, lambda x: x.end_ts, SYNC_LOOKBACK_MAX)

    def on_busy(self, span) -> None:
        self.advance(span.end_ts)
        if span.duration_ns < self.stall_ns or not span.start_ts:
            return
        st = Stall(span, self.stalls_total)
        self.stalls_total += 1
        edge = span.start_ts - ORDER_SLACK_NS
        recent = []
        for t, req in reversed(self.lookback):
            if t and t < edge:
                break
            recent.append(req)
        for req in reversed(recent):        # in completion order, as if they had come after
            st.offer(req)
        syncs = []
        for x in reversed(self.sync_lookback):
            if x.end_ts and x.end_ts < edge:
                break
            syncs.append(x)
        for x in reversed(syncs):
            st.offer_sync(x)
        self.open.append(st)
        while len(self.open) > MAX_OPEN:
            self._close(self.open.pop(0))

    def advance(self, ts: int) -> None:
        """Trace time moved to ts: stalls whose join window passed are finished."""
        if ts and ts > self.now:
            self.now = ts
        while self.open and self.open[0].end + self.join_ns < self.now:
            self._close(self.open.pop(0))

    def finish(self) -> None:
        while self.open:
            self._close(self.open.pop(0))

    def _prune(self, dq: deque, ts_of, cap: int) -> None:
        limit = self.now - self.lookback_ns
        while dq and (len(dq) > cap or ts_of(dq[0]) < limit):
            dq.popleft()

    def _close(self, st: Stall) -> None:
        result = st.compute()
        self.done.append(result)
        self.recent.append(result)
        if len(self.done) > self.max_stalls + self.max_stalls // 5:
            self.done.sort(key=_stall_order)
            self.dropped += len(self.done) - self.max_stalls
            del self.done[self.max_stalls:]
        if self.on_stall is not None:
            self.on_stall(result)

    # -- output -------------------------------------------------------------------------------
    def results(self) -> list[dict]:
        """All stalls (finished, and open ones as they stand), longest first."""
        out = list(self.done) + [st.compute() for st in self.open]
        out.sort(key=_stall_order)
        return out[:self.max_stalls]

    def latest(self, n: int = 10) -> list[tuple[dict, bool]]:
        """The n newest stalls as (result, still_open), newest first."""
        items = [(r, False) for r in self.recent] + [(st.compute(), True) for st in self.open[-n:]]
        items.sort(key=lambda it: (-it[0]["start_ts"], -it[0]["seq"]))
        return items[:n]
