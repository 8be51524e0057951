"""Read a trace file back through the same pipeline live mode uses."""
from __future__ import annotations

import sys

from tracer.pipeline import Pipeline
from tracer.recording import TraceReader


def open_trace(path: str) -> TraceReader:
    return TraceReader(path)


def analyse(path: str, stall_ms: float | None = None, on_request=None, on_sync=None, batch: int = 4096):
    """(header, pipeline) after feeding every record of the file; warnings go to stderr."""
    reader = open_trace(path)
    header = reader.header
    if stall_ms is None:
        stall_ms = header.get("stall_ms", 50)
    pipeline = Pipeline(stall_ms=stall_ms, show_values=bool(header.get("show_values")),
                        uprobe_exec=bool(header.get("exec_probes")), on_request=on_request,
                        on_sync=on_sync, targets=header.get("targets"))
    chunk = []
    for raw in reader.records():
        chunk.append(raw)
        if len(chunk) >= batch:
            pipeline.feed(chunk)
            chunk = []
    pipeline.feed(chunk)
    pipeline.finish()
    for warning in reader.warnings:
        print(f"redis-tracer: warning: {warning}", file=sys.stderr)
    return header, pipeline


def first_target(header: dict) -> dict:
    targets = header.get("targets") or [{}]
    return targets[0]
