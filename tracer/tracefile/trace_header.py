"""The facts a trace file's header keeps about where and how it was recorded.

The file format's own fields (format_version, record_header_size, codec, tracer version, host,
kernel) are recording.TraceWriter's to fill in: it owns the format.
"""
from __future__ import annotations

import os
import time

from tracer.options import TraceOptions
from tracer.schema import TraceHeader


def target_json(target) -> dict:
    """A traced redis-server as the header (and the report's instances) describe it."""
    info = target.info or {}
    return {"pid": target.pid, "port": target.port, "redis_version": info.get("redis_version") or "",
            "io_threads": info.get("io_threads"), "io_threads_do_reads": info.get("io_threads_do_reads"),
            "appendonly": info.get("appendonly"), "appendfsync": info.get("appendfsync"),
            "listen_ports": list(target.listen_ports), "exe": target.exe}


def build(session, targets, clock_offset_ns: int, options: TraceOptions,
          attached_ns: int | None = None) -> TraceHeader:
    """attached_ns: when the probes were attached, in the records' clock (monotonic ns; default now)."""
    return TraceHeader(attached_ns=attached_ns or time.monotonic_ns(), pid_of_tracer=os.getpid(), clock={"mono_to_wall_ns": clock_offset_ns},
                       targets=[target_json(t) for t in targets], probes=list(session.probes),
                       exec_probes=bool(session.exec_attached), capture_max=session.capture_max,
                       show_values=options.show_values, stall_ms=options.stall_ms,
                       mode=options.mode if options.mode != "full" else None)
