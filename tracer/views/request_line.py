"""One request as one line of text: what `redis-tracer trace` prints per request."""
from __future__ import annotations

import time

from tracer.stitch.model import Clock


def _us(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def request_line(req, clock: Clock) -> str:
    ph = req.phases_us()
    lat = req.latency_ns
    ts = clock.wall(req.start_ts) if req.start_ts else 0.0
    stamp = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1e6) % 1_000_000:06d}"
    key = req.key if req.key is not None else ""
    return (f"{stamp} {req.client or '?':<21} {req.command:<10} {key[:40]:<40} "
            f"queue={_us(ph['socket_queue'])} wait={_us(ph['wait'])} exec={_us(ph['exec'])} "
            f"reply={_us(ph['reply_write'])} total={_us(None if lat is None else lat / 1000)}us "
            f"{req.reply_type}")
