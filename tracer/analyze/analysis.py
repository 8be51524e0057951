"""The analysis layer shared by live mode, offline replay and report.

Feed it the stitcher's output (on_request / on_busy / on_sync / on_conn, optionally on_accept
and the kernel counters via set_counters); read snapshot() for the dashboard and report() for
the JSON report. Everything is derived from event timestamps (trace time), never the wall
clock, so the same event stream gives the same report whether live or replayed. Memory is
bounded: it scales with open connections and the configured top-N/caps, not with requests.
"""
from __future__ import annotations

import heapq

from tracer.analyze.diagnosis import StallDetector, format_stall
from tracer.analyze.histogram import LatencyHistogram
from tracer.analyze.patterns import PatternDetectors
from tracer.analyze.topk import KEY_CAP, SpaceSaving, TopMax
from tracer.decode.keyspec import KNOWN
from tracer.options import STALL_MS, PatternOptions
from tracer.schema import (UNDECODABLE, CommandStats, ConnStats, FsyncStats, Loss, Report, SlowRequest, Snapshot,
                           TargetInfo)
from tracer.stitch.model import LOST_REPLY, PHASES
from tracer.units import NS_PER_S, ns_to_us as _us, r3 as _r3

WINDOW_S = 5            # rates are over the last ~5 s of trace time
SLOW_WINDOW_S = 10      # "recent" slow requests
SECS_KEPT = 12          # per-second counters kept
TOP_N = 10              # slowest requests, hot and big keys listed
SPARK_WIDTH = 16        # columns of a command's latency sparkline
MAX_COMMANDS = 512      # distinct command names tracked; the rest are counted as OTHER
UNDECODABLE_SAMPLES = 5  # names kept as evidence in that row
_REFUSED = ("error", "none")
KNOWN_COMMANDS = frozenset(name.decode() for name in KNOWN)
MAX_LOSSES = 100        # loss spans listed in a report (all are counted)


class _Secs:
    """Counts per second of trace time, the last SECS_KEPT seconds."""

    __slots__ = ("counts",)

    def __init__(self):
        self.counts: dict = {}

    def add(self, sec: int, n: int = 1) -> None:
        counts = self.counts
        c = counts.get(sec)
        if c is None:
            counts[sec] = n
            if len(counts) > SECS_KEPT:
                for old in sorted(counts)[:-SECS_KEPT]:
                    del counts[old]
        else:
            counts[sec] = c + n

    def total(self, lo_sec: int, hi_sec: int) -> int:
        return sum(c for s, c in self.counts.items() if lo_sec <= s <= hi_sec)


class _Command:
    __slots__ = ("count", "hist", "exec_ns", "secs", "samples")

    def __init__(self):
        self.count = 0
        self.hist = LatencyHistogram()
        self.exec_ns = 0
        self.secs = _Secs()
        self.samples: list[str] = []    # the "?" row: a few of the unknown names it holds

    def entry(self, **figures) -> CommandStats:
        """The row as the report/snapshot shows it: figures, plus samples when there are any."""
        return CommandStats(**figures, samples=list(self.samples) if self.samples else None)


def _segments(req) -> list:
    """(name, start_ns, end_ns) of a request's phases, in time order, for a waterfall."""
    out = []
    arr, wake, rs, re_ = req.arrival_ts, req.wake_ts, req.read_start_ts, req.read_end_ts
    xs, xe, ps, pe = req.exec_start_ts, req.exec_end_ts, req.reply_start_ts, req.reply_end_ts
    if arr and rs:
        woke = wake if arr <= wake <= rs else rs
        out.append(("socket_queue", arr, woke))
        if woke < rs:
            out.append(("wait", woke, rs))
    if rs and re_:
        out.append(("read", rs, re_))
    if xs and xe:
        if re_ and xs > re_:
            out.append(("wait", re_, xs))
        out.append(("exec", xs, xe))
    if ps and pe:
        if xe and ps > xe:
            out.append(("wait", xe, ps))
        out.append(("reply_write", ps, pe))
    return out


class Analyzer:
    def __init__(self, stall_ms: float = STALL_MS, top_n: int = TOP_N, key_cap: int = KEY_CAP,
                 max_commands: int = MAX_COMMANDS, lookback_s: float = 5.0, lookback_max: int = 50_000,
                 on_stall=None, patterns: PatternOptions = PatternOptions(), every_request: bool = True):
        """every_request: False when only sampled and slow requests reach on_request (engine mode)."""
        self.stall_ms = stall_ms
        self.top_n = top_n
        self.max_commands = max_commands
        self.first_ts = 0
        self.last_ts = 0
        self.requests = 0
        self.unanswered = 0
        self.commands: dict[str, _Command] = {}
        self.exec_total_ns = 0
        self.phase_sq_ns = 0
        self.phase_wait_ns = 0
        self.phase_exec_ns = 0
        self.phase_rw_ns = 0
        self.req_secs = _Secs()
        self.slow_secs: dict = {}           # second -> min-heap of (latency, seq, request), top_n each
        self.seq = 0
        self.lost_events = 0
        self.losses: list = []              # LossSpans, the first MAX_LOSSES: who lost records, when
        self.loss_spans = 0
        self.lost_requests = 0              # requests whose reply a lost record took
        self.kernel_busy_ns = None
        self.kernel_idle_ns = None
        self.prev_counters = None           # (busy, idle) at the previous set_counters, for the recent ratio
        self.recent_busy_ratio = None
        self.span_busy_ns = 0
        self.spans = 0
        self.fsync_hist = LatencyHistogram()
        self.fsync_main = 0
        self.aof_write_hist = LatencyHistogram()
        self.accepted = 0
        self.accepted_reported = 0
        self.closed = 0
        self.accept_hist = LatencyHistogram()
        self.accept_secs = _Secs()
        self.accept_seen: set = set()       # conn_ids given to on_accept, still open
        self.live_conns: set = set()        # conn_ids seen (accepted or with requests), still open
        self.hot_keys = SpaceSaving(key_cap)
        self.big_keys = TopMax(key_cap)
        self.patterns = PatternDetectors(patterns, hot_counts=self.hot_keys, complete=every_request)
        self.detector = StallDetector(stall_ms, lookback_s=lookback_s, lookback_max=lookback_max,
                                      on_stall=on_stall)

    # -- input --------------------------------------------------------------------------------
    def _seen(self, first: int, last: int) -> None:
        if first and (not self.first_ts or first < self.first_ts):
            self.first_ts = first
        if last > self.last_ts:
            self.last_ts = last

    def _command(self, name: str) -> _Command:
        cmd = self.commands.get(name)
        if cmd is None:
            if len(self.commands) >= self.max_commands:
                name = "OTHER"
                cmd = self.commands.get(name)
            if cmd is None:
                cmd = self.commands[name] = _Command()
        return cmd

    def _row(self, name: str, req) -> _Command:
        """The row of a name not seen yet. A name Redis does not know, answered with an error (a
        garbage line, a typo: "-ERR unknown command") or not at all (garbage after a protocol error,
        when Redis has closed the connection), joins the "?" row with a few names as samples,
        instead of making a one-off row per garbage line."""
        upper = name.upper()
        if req.reply_type not in _REFUSED or upper.split(" ", 1)[0] in KNOWN_COMMANDS:
            return self._command(upper)
        cmd = self._command(UNDECODABLE)
        if len(cmd.samples) < UNDECODABLE_SAMPLES and name not in cmd.samples:
            cmd.samples.append(name)
        return cmd

    def on_request(self, req) -> None:
        # hot path: the phase arithmetic mirrors Request's properties, inlined (tests compare them)
        self.requests += 1
        name = req.command or UNDECODABLE
        cmd = self.commands.get(name)
        key = req.key
        if cmd is None:
            cmd = self._row(name, req)
            if cmd.samples:
                key = None          # the "key" of a garbage line is more garbage
        cmd.count += 1
        arr, wake, rs, re_ = req.arrival_ts, req.wake_ts, req.read_start_ts, req.read_end_ts
        xs, xe, ps, pe = req.exec_start_ts, req.exec_end_ts, req.reply_start_ts, req.reply_end_ts
        start = arr or rs
        t = pe or re_ or start
        first = start or t
        if first and (not self.first_ts or first < self.first_ts):
            self.first_ts = first
        if t > self.last_ts:
            self.last_ts = t
        sec = t // NS_PER_S
        # _Secs.add inlined for the overall and the per-command count: this runs once per request,
        # and the call costs more than the count (benchmarks/stitcher_throughput.py)
        counts = self.req_secs.counts
        c = counts.get(sec)
        if c is None:
            self.req_secs.add(sec)
        else:
            counts[sec] = c + 1
        counts = cmd.secs.counts
        c = counts.get(sec)
        if c is None:
            cmd.secs.add(sec)
        else:
            counts[sec] = c + 1
        if pe and start:
            latency = pe - start if pe > start else 0
            cmd.hist.add(latency)
            self.seq += 1
            heap = self.slow_secs.get(sec)
            if heap is None:
                heap = self.slow_secs[sec] = []
                if len(self.slow_secs) > SLOW_WINDOW_S + 2:
                    for old in sorted(self.slow_secs)[:-(SLOW_WINDOW_S + 2)]:
                        del self.slow_secs[old]
            if len(heap) < self.top_n:
                heapq.heappush(heap, (latency, -self.seq, req))
            elif latency > heap[0][0]:
                heapq.heapreplace(heap, (latency, -self.seq, req))
        if not pe and req.reply_type != LOST_REPLY:
            self.unanswered += 1
        if xs and xe:
            ex = xe - xs if xe > xs else 0
            cmd.exec_ns += ex
            self.exec_total_ns += ex
            self.phase_exec_ns += ex
        if rs:
            wait = 0
            if arr:
                if arr <= wake <= rs:
                    self.phase_sq_ns += wake - arr
                    wait = rs - wake
                elif rs > arr:
                    self.phase_sq_ns += rs - arr
            if xs and re_ and xs > re_:
                wait += xs - re_
            if ps and xe and ps > xe:
                wait += ps - xe
            self.phase_wait_ns += wait
        if ps and pe and pe > ps:
            self.phase_rw_ns += pe - ps
        if key is not None:
            if key.__class__ is not str:
                key = str(key)
            hot = self.hot_keys
            counts = hot.counts
            c = counts.get(key)
            if c is None:
                hot.add(key)
            else:
                counts[key] = c + 1
            rb = req.reply_bytes
            if rb:
                big = self.big_keys
                # a full table rejects values at or below its floor (TopMax.add), keys present or not
                if rb > big.floor or len(big.values) < big.cap:
                    big.add(key, rb)
                else:
                    v = big.values.get(key)
                    if v is not None and rb > v:
                        big.values[key] = rb
        if req.conn_id:
            self.live_conns.add(req.conn_id)
        self.detector.on_request(req, t)
        self.patterns.on_request(req)

    def on_busy(self, span) -> None:
        self.spans += 1
        self.span_busy_ns += span.duration_ns
        self._seen(span.start_ts, span.end_ts)
        self.detector.on_busy(span)

    def on_sync(self, sync) -> None:
        self._seen(sync.start_ts, sync.end_ts)
        if sync.op == "aof-write":
            self.aof_write_hist.add(sync.duration_ns)
        else:
            self.fsync_hist.add(sync.duration_ns)
            if sync.main_thread:
                self.fsync_main += 1
        self.detector.on_sync(sync)

    def on_accept(self, conn) -> None:
        self.accepted += 1
        self.accept_seen.add(conn.conn_id)
        self.live_conns.add(conn.conn_id)
        self._accepted_at(conn)

    def _accepted_at(self, conn) -> None:
        q = conn.accept_queue_ns
        if q is not None:
            self.accept_hist.add(q)
        if conn.accept_ts:
            self._seen(conn.established_ts or conn.accept_ts, conn.accept_ts)
            self.accept_secs.add(conn.accept_ts // NS_PER_S)

    def on_accept_count(self, n: int) -> None:
        """The stitcher's count of accepted connections (when on_accept is not wired)."""
        self.accepted_reported = max(self.accepted_reported, int(n))

    def on_conn(self, conn) -> None:
        """A connection closed."""
        self.closed += 1
        self.live_conns.discard(conn.conn_id)
        if conn.conn_id in self.accept_seen:
            self.accept_seen.discard(conn.conn_id)
        elif conn.accept_ts:        # accepted during the trace, on_accept not wired: count it now
            self.accepted += 1
            self._accepted_at(conn)
        if conn.close_ts:
            self._seen(conn.close_ts, conn.close_ts)
            self.detector.advance(conn.close_ts)

    def on_invalidate(self, invalidation) -> None:
        """A CLIENT TRACKING invalidation push (stitch.model.Invalidation)."""
        self.patterns.on_invalidate(invalidation)

    def on_info(self, info) -> None:
        """A sample of the target's INFO (kernel.info.InfoAt)."""
        self.patterns.on_info(info)

    def on_stacks(self, stacks) -> None:
        """What a stall's main thread ran on the CPU (kernel.stacks.StacksAt)."""
        self.detector.on_stacks(stacks)

    def on_propagated(self, deletion) -> None:
        """A DEL/UNLINK the master sent its replicas (stitch.model.Propagated): an expired key's name."""
        self.detector.on_propagated(deletion)

    def on_loss(self, span) -> None:
        self.loss_spans += 1
        self.lost_requests += span.requests
        if len(self.losses) < MAX_LOSSES:
            self.losses.append(span)

    def set_counters(self, lost: int, busy_ns: int | None = None, idle_ns: int | None = None) -> None:
        """Kernel counters (cumulative): lost ring-buffer records, main-thread busy/idle ns."""
        self.lost_events = int(lost or 0)
        if busy_ns is not None and idle_ns is not None:
            if self.prev_counters is not None:
                db, di = busy_ns - self.prev_counters[0], idle_ns - self.prev_counters[1]
                if db >= 0 and di >= 0 and db + di > 0:
                    self.recent_busy_ratio = db / (db + di)
            self.prev_counters = (busy_ns, idle_ns)
            self.kernel_busy_ns, self.kernel_idle_ns = busy_ns, idle_ns

    def finish(self) -> None:
        self.detector.finish()

    # -- derived ------------------------------------------------------------------------------
    @property
    def phase_ns(self) -> dict:
        return {"socket_queue": self.phase_sq_ns, "wait": self.phase_wait_ns, "exec": self.phase_exec_ns,
                "reply_write": self.phase_rw_ns}

    @property
    def accepted_total(self) -> int:
        return max(self.accepted, self.accepted_reported)

    def busy_ratio(self) -> float | None:
        b, i = self.kernel_busy_ns, self.kernel_idle_ns
        if b is not None and i is not None and b + i > 0:
            return b / (b + i)
        span = self.last_ts - self.first_ts
        if self.first_ts and span > 0:
            return min(1.0, self.span_busy_ns / span)
        return None

    def _window(self, end: int):
        """(lo_sec, hi_sec, seconds) of the rate window ending at trace time `end`."""
        hi = end // NS_PER_S
        lo = hi - (WINDOW_S - 1)
        start = max(lo * NS_PER_S, self.first_ts)
        return lo, hi, max(end - start, 1) / NS_PER_S

    def _slow_request(self, req, base: int) -> SlowRequest:
        start = req.start_ts
        segs = _segments(req)
        values = (req.socket_queue_ns, req.wait_ns, req.exec_ns, req.reply_write_ns)
        phases = [(name, _us(v or 0)) for name, v in zip(PHASES, values)]
        offsets = []            # where each phase starts (its first segment), us from the request's start
        for name in PHASES:
            first = next((a for n, a, _ in segs if n == name), None)
            offsets.append(None if first is None else _us(first - start))
        return SlowRequest(
            client=req.client or "", command=(req.command or "?").upper(), key=req.key,
            latency_us=_us(req.latency_ns or 0),
            start_s=_r3(max(0, start - base) / NS_PER_S) if start else None,
            phases=phases, offsets_us=offsets,
            segments=[(n, _us(a - start), _us(b - a)) for n, a, b in segs],
            reply_bytes=req.reply_bytes)

    def snapshot(self, now_ts: int | None = None, max_commands: int = 12, spark_width: int = SPARK_WIDTH) -> Snapshot:
        """Live dashboard numbers; cheap. now_ts: CLOCK_MONOTONIC ns (defaults to the last event)."""
        end = max(now_ts or 0, self.last_ts)
        base = self.first_ts or end
        lo, hi, window = self._window(end)
        busy = self.busy_ratio()
        shown = sorted(self.commands.items(), key=lambda kv: (-kv[1].count, kv[0]))[:max_commands]
        mins = [c.hist.min for _, c in shown if c.hist.count]
        maxs = [c.hist.max for _, c in shown if c.hist.count]
        spark_lo = min(mins) if mins else None
        spark_hi = max(maxs) if maxs else None
        commands = {}
        for name, c in shown:
            p50, p99, p999 = c.hist.percentiles((50, 99, 99.9))
            commands[name] = c.entry(
                count=c.count, rps=_r3(c.secs.total(lo, hi) / window),
                p50_us=_us(p50), p99_us=_us(p99), p999_us=_us(p999), max_us=_us(c.hist.max),
                exec_share=_r3(c.exec_ns / self.exec_total_ns) if self.exec_total_ns else 0.0,
                spark=c.hist.sparkline(spark_width, spark_lo, spark_hi))
        slow_items = [it for s, heap in self.slow_secs.items() if s > hi - SLOW_WINDOW_S for it in heap]
        slow_items.sort(key=lambda it: (-it[0], it[1]))
        return Snapshot(
            elapsed_s=_r3((end - self.first_ts) / NS_PER_S) if self.first_ts else 0.0,
            requests=self.requests,
            rps=_r3(self.req_secs.total(lo, hi) / window),
            lost_events=self.lost_events,
            commands=commands,
            phases_us_total={p: _us(v) for p, v in self.phase_ns.items()},
            busy_ratio=None if busy is None else _r3(busy),
            busy_ratio_recent=None if self.recent_busy_ratio is None else _r3(self.recent_busy_ratio),
            slowest=[self._slow_request(it[2], base) for it in slow_items[:self.top_n]],
            stalls=[format_stall(r, base, open_=is_open) for r, is_open in self.detector.latest(10)],
            fsync=FsyncStats(count=self.fsync_hist.count, main_thread=self.fsync_main,
                             p99_us=_us(self.fsync_hist.percentile(99)), max_us=_us(self.fsync_hist.max),
                             aof_writes=self.aof_write_hist.count, aof_write_max_us=_us(self.aof_write_hist.max)),
            connections=ConnStats(accepted=self.accepted_total, closed=self.closed, open=len(self.live_conns),
                                  accept_queue_p99_us=_us(self.accept_hist.percentile(99)),
                                  accept_rate=_r3(self.accept_secs.total(lo, hi) / window)),
            hot_keys=self.hot_keys.top(self.top_n),
            big_keys=self.big_keys.top(self.top_n),
            patterns=self.patterns.results(), patterns_input=self.patterns.input)

    def report(self, target: dict, clock_first_ts: int | None = None) -> Report:
        """The report (schema 1; Report.to_json is its JSON). clock_first_ts: the trace's first event (stitcher.first_ts),
        the origin of every start_s; defaults to the earliest timestamp the analyzer saw."""
        first = clock_first_ts or self.first_ts
        duration = max(0, self.last_ts - first) / NS_PER_S if first and self.last_ts else 0.0
        port = target.get("port")
        commands = {}
        for name in sorted(self.commands):
            c = self.commands[name]
            p50, p99 = c.hist.percentiles((50, 99))
            commands[name] = c.entry(count=c.count, p50_us=_us(p50), p99_us=_us(p99), max_us=_us(c.hist.max))
        stalls = [format_stall(r, first) for r in self.detector.results()]
        busy = self.busy_ratio()
        return Report(
            target=TargetInfo(pid=int(target.get("pid") or 0), port=None if port is None else int(port),
                              redis_version=str(target.get("redis_version") or "")),
            duration_s=_r3(duration),
            requests=self.requests,
            lost_events=self.lost_events,
            commands=commands,
            stalls=stalls,
            fsync=FsyncStats(count=self.fsync_hist.count, main_thread=self.fsync_main,
                             p99_us=_us(self.fsync_hist.percentile(99)), max_us=_us(self.fsync_hist.max)),
            connections=ConnStats(accepted=self.accepted_total, closed=self.closed),
            hot_keys=[[k, n] for k, n in self.hot_keys.top(self.top_n)],
            big_keys=[[k, n] for k, n in self.big_keys.top(self.top_n)],
            phases_us_total={p: _us(v) for p, v in self.phase_ns.items()},
            unanswered=self.unanswered,
            busy_ratio=None if busy is None else _r3(busy),
            # where lost_events came from: connection, time window, requests left without a reply
            losses=[Loss(**span.as_dict(first)) for span in self.losses],
            loss_spans=self.loss_spans,
            lost_requests=self.lost_requests,
            patterns=self.patterns.results(), patterns_input=self.patterns.input)
