"""The engine's records on their way into the analysis (engine mode of runtime/pipeline.py).

* REQ records (slow, stalled, victim and sampled requests) become stitch.model.Requests for the
  Analyzer: they make the slowest requests, hot and big keys (estimates: only the requests the kernel
  sent up), and with the LOOP records the stalls, their culprits and victims.
* ENGINE records (the kernel aggregates, once per refresh) give every request's count and the
  per-command and per-phase percentiles: `apply_snapshot` / `apply_report` put them into the views.
* READ records flagged RTF_ENGINE_RAW (bytes the kernel left to user space) are counted with the
  RESP parser (raw.RawCounter), so kernel counts plus these are the exact totals. The requests the
  stitcher makes of a connection left to user space (its writes come up too) are timed into
  raw.RawLatencies, so their commands have percentiles and phases like the kernel's.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import deque

from tracer.analyze.analysis import SPARK_WIDTH
from tracer.analyze.histogram import LatencyHistogram
from tracer.engine import aggregates
from tracer.engine.commands import OTHER
from tracer.engine.histogram import EngineHistogram, bucket_bounds, bucket_value
from tracer.engine.raw import RawCounter, RawLatencies
from tracer.engine.records import decode_request
from tracer.decode.keyspec import KEEP, ArgAnalyzer
from tracer.kernel import events
from tracer.schema import CommandStats
from tracer.stitch.model import Request
from tracer.units import ns_to_us, r3

RATE_WINDOW_NS = 5_000_000_000      # rates over the last ~5 s of trace time, as analyze/analysis.py's
RAW_READS_KEPT = 64                 # raw read starts kept per instance: more than one loop iteration holds

_REPLY_TYPES = {events.RPL_OK: "ok", events.RPL_ERROR: "error", events.RPL_NIL: "nil",
                events.RPL_MOVED: "moved", events.RPL_ASK: "ask"}


def captured_args(captured: bytes) -> list[str]:
    """The whole bulk strings of a REQ record's bytes (RESP, cut after the first key): [name, key?]."""
    return [arg.decode("utf-8", "backslashreplace") for arg in captured_arg_bytes(captured)]


def named(args: list[bytes]) -> tuple[str | None, str | None]:
    """(command as --full names it, with its subcommand: "DEBUG SLEEP", "CLIENT SETNAME"; its key)
    from a REQ record's whole arguments, by the full path's command table (values are no keys)."""
    if not args:
        return None, None
    an = ArgAnalyzer()
    an.add(0, args[0])
    if len(args) > 1 and an.cls(1) & KEEP:
        an.add(1, args[1])
    return (an.name if an.sub is None else f"{an.name} {an.sub}"), an.key


def captured_arg_bytes(captured: bytes) -> list[bytes]:
    out = []
    pos = captured.find(b"\r\n") + 2 if captured[:1] == b"*" else 0
    while pos and pos < len(captured) and captured[pos:pos + 1] == b"$":
        eol = captured.find(b"\r\n", pos)
        if eol < 0:
            break
        try:
            n = int(captured[pos + 1:eol])
        except ValueError:
            break
        start = eol + 2
        if n < 0 or start + n > len(captured):
            break               # cut short: a key prefix would merge different keys
        out.append(captured[start:start + n])
        pos = start + n + 2
    return out


def to_request(rec, name: str, key, conn_id: int, client) -> Request:
    """A Request as the stitcher would make it, from a REQ record. Execution is taken as read end →
    reply start (the engine does not time it); infer_execution() shortens it to the next read."""
    req = Request()
    req.tgid, req.fd, req.conn_id, req.client = rec.tgid, rec.fd, conn_id, client
    req.thread = req.reply_thread = rec.tid
    req.command, req.key, req.argc = name, key, rec.argc
    req.request_bytes, req.reply_bytes = rec.bytes_in, rec.bytes_out
    req.reply_type = _REPLY_TYPES.get(rec.reply_type, "unknown" if rec.write_end else "none")
    req.arrival_ts = rec.arrival
    req.wake_ts = rec.wake_ts
    req.read_start_ts, req.read_end_ts = rec.read_start, rec.read_end
    if rec.write_start and rec.read_end and rec.write_start >= rec.read_end:
        req.exec_start_ts, req.exec_end_ts = rec.read_end, rec.write_start
    req.reply_start_ts, req.reply_end_ts = rec.write_start, rec.write_end
    req.batch = max(1, rec.ncmds)
    if rec.redirect:    # "-MOVED 3999 127.0.0.1:7001" -> "3999 127.0.0.1:7001", as the reply parser gives it
        req.reply_detail = rec.redirect.split(b" ", 1)[-1].decode("ascii", "replace")
    return req


def infer_execution(requests: list, other_reads=()) -> None:
    """Redis executes a command right after reading it and writes replies before it sleeps: a
    command's execution ends, at the latest, where the main thread's next read begins. Among the
    requests of one instance (REQ records of one loop iteration: a stall's culprit and its
    same-iteration victims), each execution is cut at the next read start after its read end,
    so a GET read just before a slow DEL is not taken for the one that ran for the whole stall.
    other_reads: start times of the instance's raw reads (a DEL on a connection the kernel left to
    user space has no REQ record, but its read cuts the executions before it all the same)."""
    starts = sorted([r.read_start_ts for r in requests if r.read_start_ts] + list(other_reads))
    for r in requests:
        if not r.exec_end_ts:
            continue
        i = bisect_right(starts, r.read_end_ts)
        if i < len(starts) and starts[i] < r.exec_end_ts:
            r.exec_end_ts = max(starts[i], r.exec_start_ts)


class EngineFeed:
    def __init__(self, on_request, conn_of=lambda tgid, fd: (0, None)):
        """on_request(Request) for each REQ record; conn_of(tgid, fd) -> (conn_id, client) of the
        connection the stitcher knows (from ACCEPT/FDINFO records)."""
        self.on_request = on_request
        self.conn_of = conn_of
        self.names: list = [OTHER]
        self.figures: dict = {}             # pid -> aggregates.InstanceFigures, the newest
        self.baseline: dict = {}            # pid -> InstanceFigures subtracted from the newest (a window's start)
        self.history: dict = {}             # pid -> deque of (ts, total count, {name: count})
        self.raw = RawCounter()
        self.raw_latencies = RawLatencies()
        self.held: dict = {}                # tgid -> Requests of REQ records not yet given on (flush())
        self.raw_reads: dict = {}           # tgid -> start times of its latest raw reads (infer_execution)
        self.records = 0                    # REQ records
        self.damaged = 0

    # -- input -----------------------------------------------------------------------------------
    def on_req(self, raw) -> Request | None:
        try:
            rec = decode_request(raw)
        except ValueError:
            self.damaged += 1
            return None
        self.records += 1
        name, key = named(captured_arg_bytes(rec.captured))
        if name is None:
            name = self.names[rec.cmd_id] if 0 < rec.cmd_id < len(self.names) else "?"
        conn_id, client = self.conn_of(rec.tgid, rec.fd)
        if not conn_id:         # a connection the stitcher has not seen: one id per (tgid, fd)
            conn_id = -((rec.tgid << 32) | (rec.fd & 0xFFFFFFFF))
        req = to_request(rec, name, key, conn_id, client)
        self.held.setdefault(rec.tgid, []).append(req)
        return req

    def flush(self) -> None:
        """Gives the held requests on, their execution inferred together: before the next record of
        another kind (a loop iteration's REQ records come one after another) and at a batch's end."""
        held, self.held = self.held, {}
        for tgid, requests in held.items():
            infer_execution(requests, self.raw_reads.get(tgid, ()))
            for req in requests:
                self.on_request(req)

    def on_aggregates(self, ev, baseline: bool = False) -> None:
        """baseline: figures from before a window (report --since, an interval's start): every figure
        shown is then the newest minus these (the kernel's aggregates are cumulative)."""
        try:
            figures, names = aggregates.decode(ev)
        except ValueError:
            self.damaged += 1
            return
        if names:
            self.names = names
        if baseline:
            self.baseline[ev.tgid] = figures
            return
        self.figures[ev.tgid] = figures
        hist = self.history.setdefault(ev.tgid, deque())
        counts = {name: fields["count"] for name, (fields, _) in figures.commands.items()}
        hist.append((figures.ts, sum(counts.values()), counts))
        while len(hist) > 2 and figures.ts - hist[1][0] >= RATE_WINDOW_NS:
            hist.popleft()

    def on_raw_read(self, ev) -> list:
        """Counts a raw READ's commands; returns the spans of its values and secrets (for redaction)."""
        reads = self.raw_reads.get(ev.tgid)
        if reads is None:
            reads = self.raw_reads[ev.tgid] = deque(maxlen=RAW_READS_KEPT)
        reads.append(ev.ts_enter)
        return self.raw.feed_event(ev)

    def on_raw_request(self, req) -> None:
        """A request the stitcher made of raw reads and writes (a client connection, not a link)."""
        self.raw_latencies.add(req)

    def on_close(self, ev) -> None:
        self.raw.forget(ev.tgid, ev.fd)

    # -- figures ---------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(self.figures)

    def _pids(self, pids):
        return [p for p in self.figures if pids is None or p in pids]

    def merged(self, pids=None) -> dict:
        """name -> (fields, EngineHistogram), summed over the instances; the raw path's counts and
        latencies added."""
        out: dict = {}
        for pid in self._pids(pids):
            for name, (fields, hist) in self._since_baseline(pid).items():
                if name not in out:
                    out[name] = (dict(fields), EngineHistogram(hist.buckets))
                else:
                    total, merged = out[name]
                    for k, v in fields.items():
                        total[k] = max(total[k], v) if k == "max_ns" else total[k] + v
                    merged.add(hist)
        for (tgid, name), n in self.raw.counts.items():
            if pids is None or tgid in pids:
                fields, _ = out.setdefault(name, _empty_row())
                fields["count"] += n
        for (tgid, name), (timed, hist) in self.raw_latencies.commands.items():
            if pids is None or tgid in pids:
                fields, merged = out.setdefault(name, _empty_row())
                fields["done"] += timed["done"]
                fields["sum_ns"] = fields.get("sum_ns", 0) + timed["sum_ns"]
                fields["max_ns"] = max(fields["max_ns"], timed["max_ns"])
                merged.add(hist)
        return out

    def _since_baseline(self, pid: int) -> dict:
        """name -> (fields, EngineHistogram) of one instance, less its baseline (max_ns: the window's
        own is unknown, so the newest bounded by the bucket of the window's largest value)."""
        commands = self.figures[pid].commands
        base = self.baseline.get(pid)
        if base is None:
            return commands
        out = {}
        for name, (fields, hist) in commands.items():
            before = base.commands.get(name)
            if before is None:
                out[name] = (fields, hist)
                continue
            diff = EngineHistogram([max(0, a - b) for a, b in zip(hist.buckets, before[1].buckets)])
            if not diff.count and fields["count"] == before[0]["count"]:
                continue
            delta = {k: (v if k == "max_ns" else max(0, v - before[0].get(k, 0))) for k, v in fields.items()}
            top = max((i for i, n in enumerate(diff.buckets) if n), default=None)
            if top is not None:
                delta["max_ns"] = min(fields["max_ns"], bucket_bounds(top)[1] - 1)
            out[name] = (delta, diff)
        return out

    def phase_histograms(self, pids=None) -> dict:
        """phase -> EngineHistogram summed over the instances, less the baselines."""
        out: dict = {}
        for pid in self._pids(pids):
            base = self.baseline.get(pid)
            for name, hist in self.figures[pid].phases.items():
                before = base.phases.get(name) if base is not None else None
                buckets = hist.buckets if before is None else [max(0, a - b) for a, b in
                                                                 zip(hist.buckets, before.buckets)]
                out.setdefault(name, EngineHistogram()).add(EngineHistogram(buckets))
        for (tgid, name), (_, hist) in self.raw_latencies.phases.items():
            if pids is None or tgid in pids:
                out.setdefault(name, EngineHistogram()).add(hist)
        return out

    def rates(self, pids=None) -> tuple[float, dict]:
        """(requests/s, {name: requests/s}) between the oldest and the newest record of the window."""
        total, by_name = 0.0, {}
        for pid in self._pids(pids):
            hist = self.history.get(pid)
            if not hist or len(hist) < 2:
                continue
            (t0, n0, c0), (t1, n1, c1) = hist[0], hist[-1]
            secs = (t1 - t0) / 1e9
            if secs <= 0:
                continue
            total += (n1 - n0) / secs
            for name, n in c1.items():
                by_name[name] = by_name.get(name, 0.0) + (n - c0.get(name, 0)) / secs
        return total, by_name

    def phases_us(self, pids=None) -> dict:
        sums: dict = {}
        for pid in self._pids(pids):
            base = self.baseline.get(pid)
            for name, ns in self.figures[pid].phase_sum_ns.items():
                if base is not None:
                    ns = max(0, ns - base.phase_sum_ns.get(name, 0))
                sums[name] = sums.get(name, 0) + ns
        for (tgid, name), (fields, _) in self.raw_latencies.phases.items():
            if pids is None or tgid in pids:
                sums[name] = sums.get(name, 0) + fields["sum_ns"]
        return {name: ns_to_us(v) for name, v in sums.items()}

    def command_rows(self, pids=None, live: bool = False) -> dict:
        rates = self.rates(pids)[1] if live else {}
        rows = {}
        for name, (fields, hist) in self.merged(pids).items():
            top = fields["max_ns"]

            def pct(p):     # a bucket's midpoint can lie above the largest value in it
                return ns_to_us(min(hist.percentile(p), top))
            row = CommandStats(count=fields["count"], p50_us=pct(50), p99_us=pct(99), max_us=ns_to_us(top))
            if live:
                row.p999_us = pct(99.9)
                row.rps = r3(rates.get(name, 0.0))
            rows[name] = row
        return rows

    def node_figures(self, pid: int) -> tuple[int, float, float | None]:
        """(requests, requests/s, p99 in us or None) of one instance, for the nodes panel."""
        merged = self.merged({pid})
        total = EngineHistogram()
        for _, hist in merged.values():
            total.add(hist)
        return (sum(fields["count"] for fields, _ in merged.values()), r3(self.rates({pid})[0]),
                ns_to_us(total.percentile(99)) if total.count else None)

    # -- into the views ----------------------------------------------------------------------------
    def apply_snapshot(self, snap, pids=None, max_commands: int = 12) -> None:
        """The kernel's figures in a Snapshot the Analyzer made from the REQ records."""
        if not self._pids(pids) and not self.raw.counts:
            return
        rows = self.command_rows(pids, live=True)
        shown = dict(sorted(rows.items(), key=lambda kv: (-kv[1].count, kv[0]))[:max_commands])
        merged = self.merged(pids)
        hists = {name: _latency_histogram(merged[name][1]) for name in shown}
        drawn = [h for h in hists.values() if h.count]
        lo = min((h.min for h in drawn), default=None)
        hi = max((h.max for h in drawn), default=None)
        for name, row in shown.items():     # one axis for every row, as the full path draws them
            row.spark = hists[name].sparkline(SPARK_WIDTH, lo, hi)
        _keep_samples(shown, snap.commands)
        snap.commands = shown
        snap.requests = sum(r.count for r in rows.values())
        snap.rps = r3(self.rates(pids)[0])
        snap.phases_us_total = self.phases_us(pids) or snap.phases_us_total
        snap.mode = "engine"

    def apply_report(self, report, pids=None) -> None:
        if not self._pids(pids) and not self.raw.counts:
            return
        rows = self.command_rows(pids)
        _keep_samples(rows, report.commands)
        report.commands = {name: rows[name] for name in sorted(rows)}
        report.requests = sum(r.count for r in rows.values())
        report.phases_us_total = self.phases_us(pids) or report.phases_us_total
        report.mode = "engine"


def _empty_row() -> tuple:
    """A command the kernel has no figures for (only the raw path saw it)."""
    return dict.fromkeys(("count", "done", "sum_ns", "max_ns"), 0), EngineHistogram()


def _keep_samples(rows: dict, analysed: dict) -> None:
    """The "?" row's sample names, from the Analyzer's row (the stitcher decoded the raw bytes)."""
    for name, row in rows.items():
        samples = getattr(analysed.get(name), "samples", None)
        if samples:
            row.samples = samples


def _latency_histogram(hist: EngineHistogram) -> LatencyHistogram:
    """The kernel's buckets as the full path's histogram (bucket midpoints), for its sparkline."""
    out = LatencyHistogram()
    for idx, n in enumerate(hist.buckets):
        if n:
            out.add(bucket_value(idx), n)
    return out
