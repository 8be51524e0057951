"""Read a trace file back through the same pipeline live mode uses."""
from __future__ import annotations

import math
import sys

from tracer.kernel import events
from tracer.options import STALL_MS, STALL_MS_MAX
from tracer.runtime.pipeline import Pipeline
from tracer.runtime.window import Window, covered_s
from tracer.schema import TraceHeader
from tracer.tracefile.recording import TraceReader

_HEADER_SIZE = events.HEADER_SIZE
_cap_len = events.cap_len_of
ANALYSE_BATCH = 4096  # records fed to the pipeline at once when a whole file is analysed
_INT_FIELDS = ("pid", "port")
_MAX_INT = 2**63 - 1


def _int_or_none(v):
    return v if type(v) is int and 0 <= v <= _MAX_INT else None


def sane_header(header: dict, warnings: list) -> dict:
    """The header fields the analysis uses, with wrong types or absurd values replaced by defaults
    (a hand-edited or hostile file must give a result, not a traceback)."""
    h = dict(header)
    fixed = []
    stall = h.get("stall_ms", STALL_MS)
    if type(stall) not in (int, float) or not (0 < stall <= STALL_MS_MAX) or not math.isfinite(stall):
        h["stall_ms"] = STALL_MS
        fixed.append("stall_ms")
    for name in ("show_values", "exec_probes"):
        if name in h and type(h[name]) is not bool:
            h[name] = bool(h[name]) if h[name] in (0, 1, None) else name == "show_values"
            fixed.append(name)
    targets = h.get("targets", [])
    clean = []
    if type(targets) is not list:
        fixed.append("targets")
        targets = []
    for t in targets:
        if type(t) is not dict:
            fixed.append("targets")
            continue
        t = dict(t)
        for name in _INT_FIELDS:
            if name in t and t[name] is not None and _int_or_none(t[name]) is None:
                t[name] = None
                fixed.append(f"targets.{name}")
        ports = t.get("listen_ports")
        if ports is not None and (type(ports) is not list or any(_int_or_none(p) is None for p in ports)):
            t["listen_ports"] = []
            fixed.append("targets.listen_ports")
        for name, v in list(t.items()):
            if name not in _INT_FIELDS and name != "listen_ports" and v is not None and \
                    type(v) not in (str, int, float, bool):
                t[name] = str(v)[:200]
        clean.append(t)
    h["targets"] = clean
    clock = h.get("clock")
    if clock is not None and (type(clock) is not dict or type(clock.get("mono_to_wall_ns", 0)) is not int
                              or abs(clock.get("mono_to_wall_ns", 0)) > _MAX_INT):
        h["clock"] = {"mono_to_wall_ns": 0}
        fixed.append("clock")
    for name in ("attached_ns", "detached_ns"):
        if name in h and h[name] is not None and (_int_or_none(h[name]) is None or not h[name]):
            h[name] = None
            fixed.append(name)
    if fixed:
        warnings.append("header field(s) " + ", ".join(sorted(set(fixed))) + " had invalid values; defaults used")
    return h


class CheckedTraceReader(TraceReader):
    """TraceReader for the analysis: a sane header, and records too short for what they declare
    (which a valid block can still hold) skipped with a warning instead of failing the decode."""

    def __init__(self, path):
        super().__init__(path)
        self.header = sane_header(self.header, self._header_warnings)

    def records(self):
        return self._checked(super().records())

    def _checked(self, inner):
        bad = 0
        for raw in inner:
            n = len(raw)
            if n < _HEADER_SIZE or _HEADER_SIZE + _cap_len(raw) > n:
                bad += 1
                continue
            yield raw
        if bad:
            self.warnings.append(f"{bad:,} damaged records (shorter than they declare) were skipped")


def open_trace(path: str) -> TraceReader:
    return CheckedTraceReader(path)


def pipeline_for(header: TraceHeader, stall_ms: float | None = None, **kw) -> Pipeline:
    """The pipeline a recording is read back through: configured as it was recorded, unless
    stall_ms overrides the recorded threshold."""
    return Pipeline(stall_ms=stall_ms if stall_ms is not None else header.stall_ms or STALL_MS,
                    show_values=bool(header.show_values), uprobe_exec=bool(header.exec_probes),
                    targets=header.targets, engine=header.mode == "engine", **kw)


# kept before a --since window: what later records need to be understood (which fd is which client),
# never what would be counted (requests, stalls, fsyncs)
CONTEXT_KINDS = frozenset((events.ACCEPT, events.CLOSE, events.FDINFO, events.EXIT, events.COUNTERS))


def analyse(path: str, stall_ms: float | None = None, on_request=None, on_sync=None, batch: int = ANALYSE_BATCH,
            window: Window = Window(), progress=None, histograms: bool = False):
    """(header, pipeline) after feeding every record of the file (or of `window`); warnings go to stderr.
    progress(done_bytes, total_bytes) is called now and then; header.detached_ns comes from the trailer;
    pipeline.report() is timed attach to detach and, with `histograms`, carries the log2 histograms."""
    reader = open_trace(path)
    header = TraceHeader.from_json(reader.header)
    pipeline = pipeline_for(header, stall_ms, on_request=on_request, on_sync=on_sync, histograms=histograms)
    lo, hi = 0, None
    resolved = window.whole
    first = last = 0
    cut_short = False
    kind_at, record_ts, engine = events.KIND_BYTE, events.record_ts, pipeline.engine
    chunk = []
    for raw in reader.records():
        ts = record_ts(raw)
        if ts:
            if not first:
                first = ts
            if not resolved:
                lo, hi = window.resolve(header.attached_ns or ts, header.clock_offset_ns)
                resolved = True
            if ts < lo:
                kind = raw[kind_at]
                if kind in CONTEXT_KINDS:
                    chunk.append(raw)
                elif kind == events.ENGINE and engine is not None:
                    engine.on_aggregates(events.decode(raw), baseline=True)  # counts before the window
                continue
            if hi is not None and ts > hi:
                cut_short = True
                break
            last = max(last, ts)
        chunk.append(raw)
        if len(chunk) >= batch:
            pipeline.feed(chunk)
            chunk = []
            if progress is not None:
                progress(reader.offset, reader.size)
    pipeline.feed(chunk)
    pipeline.finish()
    if progress is not None:
        progress(reader.size, reader.size)
    print_warnings(reader)
    if not cut_short and reader.trailer:
        detached = reader.trailer.get("detached_ns")
        header.detached_ns = detached if type(detached) is int and detached > 0 else None
    # files older than the attach time keep the analysis' own span (first to last request)
    pipeline.covered_s = covered_s(header.attached_ns, header.detached_ns, first, hi if cut_short else last,
                                   lo, hi) if header.attached_ns else None
    return header, pipeline


def print_warnings(reader) -> None:
    for warning in reader.warnings:
        print(f"redis-tracer: warning: {warning}", file=sys.stderr)
