"""Raw records → (redacted recording) → stitcher → analyzer: the one path live, replay and report share."""
from __future__ import annotations

import dataclasses

from tracer.analyze.analysis import TOP_N, Analyzer
from tracer.analyze.histogram import LatencyHistogram, bucket_value as full_bucket_value
from tracer.analyze.log2 import PhaseLog2, from_buckets, histograms_json
from tracer.decode.redact import error_text_spans, redact_spans
from tracer.engine.feed import EngineFeed
from tracer.engine.histogram import bucket_value as engine_bucket_value
from tracer.kernel import events
from tracer.options import STALL_MS, PatternOptions
from tracer.runtime.tuning import tune_gc
from tracer.schema import NodeRow, Report, Snapshot
from tracer.stitch.cluster import RedirectTracker
from tracer.stitch.stitcher import Stitcher
from tracer.units import ns_to_us, r3


class Pipeline:
    def __init__(self, stall_ms: float = STALL_MS, show_values: bool = False, uprobe_exec: bool = False,
                 on_request=None, on_sync=None, writer=None, top_n: int = TOP_N, targets: list | None = None,
                 patterns: PatternOptions = PatternOptions(), engine: bool = False, histograms: bool = False,
                 on_stall=None):
        """engine: the records are the engine's (REQ, ENGINE, raw READs, ...; tracer/engine/feed.py).
        histograms: the report carries log2 histograms (analyze/log2.py; per phase that costs ~0.4 us
        per stitched request, so only runs whose report is printed as JSON ask for them).
        on_stall(pid, StallVerdict): each stall as it is finished (the headless agent's exporters)."""
        tune_gc()  # the hot loop allocates per request: default GC thresholds cost 15-20 % (tuning.py)
        # several redis-servers: every figure also per instance (tgid), in an Analyzer of its own
        self.targets = [t for t in (targets or []) if t.get("pid")]
        several = len(self.targets) > 1

        def stalls_of(pid):     # a StallVerdict does not name its process: its Analyzer does
            return None if on_stall is None else (lambda verdict: on_stall(pid, verdict))
        self.analyzer = Analyzer(stall_ms=stall_ms, top_n=top_n, patterns=patterns, every_request=not engine,
                                 on_stall=None if several else stalls_of(self.targets[0]["pid"] if self.targets else 0))
        self.instances = {t["pid"]: Analyzer(stall_ms=stall_ms, top_n=top_n, patterns=patterns,
                                              every_request=not engine, on_stall=stalls_of(t["pid"]))
                          for t in self.targets} if several else {}
        port_to_tgid = {p: t["pid"] for t in self.targets for p in (t.get("listen_ports") or [t.get("port")]) if p}
        self.redirects = RedirectTracker(port_to_tgid)
        self.writer = writer  # a TraceWriter: records are written after redaction
        self.phase_log2 = PhaseLog2() if histograms else None
        if self.phase_log2 is not None:
            phases, extra = self.phase_log2.on_request, on_request
            on_request = phases if extra is None else (lambda req: (phases(req), extra(req)))
        self.covered_s: float | None = None     # seconds traced, attach to detach (runtime/window.covered_s)
        self.extra_on_request = on_request
        self.extra_on_sync = on_sync
        a = self.analyzer
        on_busy, on_conn, on_accept, on_loss, on_invalidate, on_info, on_stacks, on_propagated = (
            a.on_busy, a.on_conn, a.on_accept, a.on_loss, a.on_invalidate, a.on_info, a.on_stacks, a.on_propagated)
        on_sched, on_redis_log = a.on_sched, a.on_redis_log
        if self.instances:
            on_busy, on_conn, on_accept, on_loss, on_invalidate, on_info, on_stacks, on_propagated = (
                self._fan_out("on_busy"), self._fan_out("on_conn"), self._fan_out("on_accept"),
                self._fan_out("on_loss"), self._fan_out("on_invalidate"), self._fan_out("on_info"),
                self._fan_out("on_stacks"), self._fan_out("on_propagated"))
            on_sched, on_redis_log = self._fan_out("on_sched"), self._fan_out("on_redis_log")
        self.stitcher = Stitcher(on_request=self._on_stitched_request if engine else self._on_request, on_busy=on_busy, on_sync=self._on_sync,
                                 on_conn=on_conn, on_accept=on_accept, on_counters=self._on_counters,
                                 on_loss=on_loss, on_invalidate=on_invalidate, on_info=on_info, on_stacks=on_stacks,
                                 on_propagated=on_propagated, on_sched=on_sched, on_redis_log=on_redis_log,
                                 show_values=show_values, mask_payloads=writer is not None,
                                 uprobe_exec=uprobe_exec)
        self.lost_events = 0
        self.engine = EngineFeed(self._on_request, self._conn_of) if engine else None

    @property
    def requests(self) -> int:
        """Requests seen: stitched ones, or in engine mode the kernel's count (plus the raw path's)."""
        if self.engine is not None and self.engine.active:
            return sum(fields["count"] for fields, _ in self.engine.merged().values())
        return self.stitcher.stats.requests

    def _conn_of(self, tgid: int, fd: int):
        state = self.stitcher.conns.get((tgid, fd))
        return (state.conn.conn_id, state.conn.client) if state is not None else (0, None)

    def _fan_out(self, method: str):
        overall = getattr(self.analyzer, method)
        instances = self.instances

        def call(item):
            overall(item)
            inst = instances.get(item.tgid)
            if inst is not None:
                getattr(inst, method)(item)
        return call

    def _on_request(self, req) -> None:
        self.analyzer.on_request(req)
        self.redirects.on_request(req)
        if self.instances:
            inst = self.instances.get(req.tgid)
            if inst is not None:
                inst.on_request(req)
        if self.extra_on_request is not None:
            self.extra_on_request(req)

    def _on_stitched_request(self, req) -> None:
        """Engine mode: the stitcher follows only what the kernel left to user space; a request it
        made of a client connection's raw reads and writes is timed into the engine's figures (a
        link's are Redis's own traffic, never counted as requests)."""
        state = self.stitcher.conns.get((req.tgid, req.fd))
        if state is None or state.link is None:
            self.engine.on_raw_request(req)
        self._on_request(req)

    def _on_sync(self, sync) -> None:
        self.analyzer.on_sync(sync)
        if self.instances and sync.tgid in self.instances:
            self.instances[sync.tgid].on_sync(sync)
        if self.extra_on_sync is not None:
            self.extra_on_sync(sync)

    def _on_counters(self, lost, busy_ns, idle_ns) -> None:
        self.lost_events = lost
        self.analyzer.set_counters(lost, busy_ns or None, idle_ns or None)

    def feed(self, records) -> None:
        if self.engine is not None:
            self._feed_engine(records)
            return
        if self.writer is None:
            self.stitcher.feed_raw(records)
            return
        # Recording: each record is written after the stitcher saw it, with the secret and value
        # bytes its parser found masked in place (lengths kept, so replay parses identically).
        decode, feed, stitcher = events.decode, self.stitcher.feed, self.stitcher
        write = events.WRITE
        hsize = events.HEADER_SIZE
        out = []
        append = out.append
        for raw in records:
            ev = decode(raw)
            stitcher.last_spans = None
            feed(ev)
            spans = stitcher.last_spans
            payload = ev.payload
            if not payload:
                append(raw)
                continue
            if ev.kind == write:
                spans = self._write_spans(ev, spans)
            if spans:
                # lengths are kept, so the header is unchanged: no need to re-encode it
                head = raw[:hsize]
                raw = (head if head.__class__ is bytes else bytes(head)) + redact_spans(payload, spans)
            append(raw)
        self.writer.write_many(out)
        self.writer.maybe_flush()

    def _write_spans(self, ev, spans):
        """What of a WRITE record's bytes is masked in a recording: the stitcher's spans (values,
        secret replies), error texts (they echo arguments, secrets too), all of an AOF write."""
        payload = ev.payload
        if (ev.tgid, ev.fd) in self.stitcher.aof_fds:
            # captured before the fd was known to be the AOF: its bytes are commands and values
            return [(0, len(payload))]
        if payload[:1] == b"-" or b"\r\n-" in payload:  # error_text_spans' own pre-check
            errors = error_text_spans(payload)
            if errors:
                return list(spans or ()) + errors
        return spans

    def _engine_spans(self, ev, engine) -> list | None:
        """Engine mode, a READ or WRITE the stitcher has just seen: what to mask when recording it.
        A link's bytes are masked as --full masks them (the stitcher's spans keep the REPLCONF/PSYNC
        that name it, so replay finds the link again); a client's reads as the raw counter parses
        them (engine None: not counted); a client's raw replies as --full masks them (every value and
        error text: engine mode never shows values), so that a replay re-stitches the same requests
        and times them as live did; whole where the reply parser did not run, and every other write
        (engine None: an unclassified fd's, the AOF's)."""
        state = self.stitcher.conns.get((ev.tgid, ev.fd))
        spans = self.stitcher.last_spans
        if state is not None and state.link is not None:
            return self._write_spans(ev, spans) if ev.kind == events.WRITE else spans
        if ev.kind == events.READ and engine is not None:
            return engine.on_raw_read(ev)
        if ev.kind == events.WRITE and engine is not None and spans is not None:
            return self._write_spans(ev, spans)
        return [(0, len(ev.payload))]

    def _feed_engine(self, records) -> None:
        """Engine mode: REQ and ENGINE records to the engine feed, raw READs counted (values and secrets
        masked before recording; raw WRITEs masked whole), the rest (ACCEPT, CLOSE, FSYNC, LOOP, COUNTERS, ...) to the stitcher."""
        engine, feed, decode = self.engine, self.stitcher.feed, events.decode
        stitcher = self.stitcher
        kind_at, flags_at = events.KIND_BYTE, events.FLAGS_BYTE
        out = [] if self.writer is not None else None
        for raw in records:
            kind = raw[kind_at]
            if kind == events.REQ:
                engine.on_req(raw)      # held while REQ records follow each other (one loop iteration)
                feed(decode(raw))       # its ts fields lie where every record's do: the trace clock
                if out is not None:
                    out.append(raw)
                continue
            engine.flush()              # the held requests, in stream order before this record
            if (kind == events.READ or kind == events.WRITE) and raw[flags_at] & events.RTF_ENGINE_RAW:
                # bytes the kernel left to user space: the stitcher follows them as --full does (links,
                # and requests the kernel sent no record for: a stall's culprit on such a connection);
                # the commands of client connections are counted from the reads; reply bytes (values)
                # are never recorded
                ev = decode(raw)
                stitcher.last_spans = None
                feed(ev)
                spans = self._engine_spans(ev, engine)
            else:
                ev = decode(raw)
                if kind == events.ENGINE:
                    engine.on_aggregates(ev)
                elif kind == events.CLOSE:
                    engine.on_close(ev)
                stitcher.last_spans = None
                feed(ev)
                # the AOF's writes, an unclassified fd's (the replica's handshake on its master link)
                spans = self._engine_spans(ev, None) if kind == events.WRITE and ev.payload else None
            if spans and out is not None:
                head = raw[:events.HEADER_SIZE]
                raw = (head if head.__class__ is bytes else bytes(head)) + redact_spans(ev.payload, spans)
            if out is not None:
                out.append(raw)
        engine.flush()
        if out is not None:
            self.writer.write_many(out)
            self.writer.maybe_flush()

    def snapshot(self, now_ts: int | None = None) -> Snapshot:
        """What a live view shows at trace time now_ts (default: the last event), nodes included."""
        snap = self.analyzer.snapshot(now_ts)
        if self.engine is not None:
            self.engine.apply_snapshot(snap)
        snap.nodes = self.node_rows(now_ts)
        return snap

    def node_rows(self, now_ts: int | None = None) -> list[NodeRow]:
        """One row per traced instance for the dashboard's per-node view (empty with one instance)."""
        rows = []
        for t in self.targets:
            inst = self.instances.get(t["pid"])
            if inst is None:
                continue
            snap = inst.snapshot(now_ts, max_commands=0)
            merged = LatencyHistogram()
            for c in inst.commands.values():
                merged.merge(c.hist)
            busy = inst.busy_ratio()
            requests, rps = snap.requests, snap.rps
            p99_us = ns_to_us(merged.percentile(99)) if merged.count else None
            if self.engine is not None and self.engine.active:     # the kernel's figures, not the records'
                requests, rps, p99_us = self.engine.node_figures(t["pid"])
            rows.append(NodeRow(pid=t["pid"], port=t.get("port"), requests=requests, rps=rps, p99_us=p99_us,
                                busy_ratio=None if busy is None else r3(busy),
                                stalls=len(inst.detector.results())))
        return rows

    def advance(self, now_ts: int) -> None:
        """Trace time is now_ts even without records (an idle server): stalls whose join window passed
        are finished (and handed to on_stall)."""
        for analyzer in (self.analyzer, *self.instances.values()):
            analyzer.detector.advance(now_ts)

    def log2_histograms(self) -> dict:
        """Per command from the analysis' own histograms (the kernel's in engine mode), per phase from
        PhaseLog2 (every stitched request) or the kernel's phase histograms."""
        engine = self.engine
        if engine is None or not engine.active:
            commands = {name: from_buckets(c.hist.counts, full_bucket_value) for name, c in self.analyzer.commands.items()}
            return histograms_json(commands, self.phase_log2.phases)
        commands = {name: from_buckets(hist.buckets, engine_bucket_value) for name, (_, hist) in engine.merged().items()}
        phases = {name: from_buckets(hist.buckets, engine_bucket_value) for name, hist in engine.phase_histograms().items()}
        return histograms_json(commands, phases)

    def finish(self) -> None:
        self.stitcher.finish()
        self.analyzer.finish()
        self.redirects.finish()
        for inst in self.instances.values():
            inst.finish()

    def report(self, target: dict) -> Report:
        # start_s counts from the first record of the stream, live and offline alike
        first = self.stitcher.first_ts or None
        report = self.analyzer.report(target, clock_first_ts=first)
        if self.engine is not None:
            self.engine.apply_report(report)
        if self.covered_s is not None:
            report.duration_s = round(self.covered_s, 3)
        if self.phase_log2 is not None:
            report.histograms = self.log2_histograms()
        instances = []
        for t in self.targets or [target]:
            inst = self.instances.get(t.get("pid"))
            # one instance: its figures are the top level's
            one = dataclasses.replace(report) if inst is None else inst.report(t, clock_first_ts=first)
            if inst is not None and self.engine is not None:
                self.engine.apply_report(one, pids={t.get("pid")})
            one.schema = None
            one.links = [link.as_dict() for link in self.stitcher.links if link.tgid == t.get("pid")]
            instances.append(one)
        report.instances = instances
        report.redirects = self.redirects.as_dict({t.get("pid"): t.get("port") for t in self.targets or [target]})
        report.links = [dict(link.as_dict(), pid=link.tgid) for link in self.stitcher.links]
        return report
