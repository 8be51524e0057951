"""The facts a trace file's header keeps about where and how it was recorded."""
from __future__ import annotations

import os
import platform
import socket

from tracer import __version__
from tracer.stitch.model import Clock


def target_dict(target) -> dict:
    info = target.info or {}
    return {"pid": target.pid, "port": target.port, "redis_version": info.get("redis_version") or "",
            "io_threads": info.get("io_threads"), "io_threads_do_reads": info.get("io_threads_do_reads"),
            "appendonly": info.get("appendonly"), "appendfsync": info.get("appendfsync"),
            "listen_ports": list(target.listen_ports), "exe": target.exe}


def build(session, targets, clock: Clock, stall_ms: float, show_values: bool) -> dict:
    return {
        "format_version": 1,
        "tracer_version": __version__,
        "host": socket.gethostname(),
        "kernel": platform.release(),
        "pid_of_tracer": os.getpid(),
        "clock": {"mono_to_wall_ns": clock.offset_ns},
        "targets": [target_dict(t) for t in targets],
        "probes": list(session.probes),
        "exec_probes": bool(session.exec_attached),
        "capture_max": session.capture_max,
        "show_values": bool(show_values),
        "stall_ms": stall_ms,
        "record_header_size": 80,
    }
