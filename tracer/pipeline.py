"""Raw records → (redacted recording) → stitcher → analyzer: the one path live, replay and report share."""
from __future__ import annotations

from tracer import events
from tracer.analysis import Analyzer
from tracer.redact import redact_spans
from tracer.stitcher import Stitcher


class Pipeline:
    def __init__(self, stall_ms: float = 50, show_values: bool = False, uprobe_exec: bool = False,
                 on_request=None, on_sync=None, writer=None, top_n: int = 10):
        self.analyzer = Analyzer(stall_ms=stall_ms, top_n=top_n)
        self.writer = writer  # a TraceWriter: records are written after redaction
        self.extra_on_request = on_request
        self.extra_on_sync = on_sync
        a = self.analyzer
        self.stitcher = Stitcher(on_request=self._on_request, on_busy=a.on_busy, on_sync=self._on_sync,
                                 on_conn=a.on_conn, on_accept=a.on_accept, on_counters=self._on_counters,
                                 show_values=show_values, mask_payloads=writer is not None,
                                 uprobe_exec=uprobe_exec)
        self.lost_events = 0

    def _on_request(self, req) -> None:
        self.analyzer.on_request(req)
        if self.extra_on_request is not None:
            self.extra_on_request(req)

    def _on_sync(self, sync) -> None:
        self.analyzer.on_sync(sync)
        if self.extra_on_sync is not None:
            self.extra_on_sync(sync)

    def _on_counters(self, lost, busy_ns, idle_ns) -> None:
        self.lost_events = lost
        self.analyzer.set_counters(lost, busy_ns or None, idle_ns or None)

    def feed(self, records) -> None:
        if self.writer is None:
            self.stitcher.feed_raw(records)
            return
        # Recording: each record is written after the stitcher saw it, with the secret and value
        # bytes its parser found masked in place (lengths kept, so replay parses identically).
        decode, feed, stitcher = events.decode, self.stitcher.feed, self.stitcher
        out = []
        for raw in records:
            ev = decode(raw)
            stitcher.last_spans = None
            feed(ev)
            spans = stitcher.last_spans
            if spans and ev.payload:
                ev.payload = redact_spans(ev.payload, spans)
                raw = events.encode(ev)
            out.append(raw)
        self.writer.write_many(out)
        self.writer.maybe_flush()

    def finish(self) -> None:
        self.stitcher.finish()
        self.analyzer.finish()

    def report(self, target: dict) -> dict:
        # start_s counts from the first record of the stream, live and offline alike
        return self.analyzer.report(target, clock_first_ts=self.stitcher.first_ts or None)
