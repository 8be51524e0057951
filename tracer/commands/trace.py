"""`redis-tracer trace`: one line (or JSON object) per completed request."""
from __future__ import annotations

import json
import sys

from tracer import runner
from tracer.model import Clock


def add_parser(sub):
    p = sub.add_parser("trace", help="print every request with its phases (text or JSON lines)")
    runner.add_target_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object per request (JSON Lines)")
    return p


def _fmt_us(v):
    return "-" if v is None else f"{v:.0f}"


def format_line(req, clock: Clock) -> str:
    ph = req.phases_us()
    lat = req.latency_ns
    ts = clock.wall(req.start_ts) if req.start_ts else 0.0
    import time as _t

    stamp = _t.strftime("%H:%M:%S", _t.localtime(ts)) + f".{int(ts * 1e6) % 1_000_000:06d}"
    key = req.key if req.key is not None else ""
    return (f"{stamp} {req.client or '?':<21} {req.command:<10} {key[:40]:<40} "
            f"queue={_fmt_us(ph['socket_queue'])} wait={_fmt_us(ph['wait'])} exec={_fmt_us(ph['exec'])} "
            f"reply={_fmt_us(ph['reply_write'])} total={_fmt_us(None if lat is None else lat / 1000)}us "
            f"{req.reply_type}")


def run(args) -> int:
    from tracer.stitcher import Stitcher

    runner.check_duration(args)
    targets = runner.resolve_targets(args)
    clock = Clock()
    out = sys.stdout
    if args.json:
        def emit(req):
            out.write(json.dumps(req.to_json(clock)) + "\n")
    else:
        def emit(req):
            out.write(format_line(req, clock) + "\n")
    stitcher = Stitcher(on_request=emit, show_values=args.show_values, uprobe_exec=args.exec_probes)
    session = runner.attach(args, targets)
    try:
        runner.drain_loop(session, stitcher.feed_raw, args.duration, args.poll_ms, tick=out.flush)
        stitcher.finish()
        out.flush()
        lost = session.counters()["lost"]
    finally:
        session.close()
    s = stitcher.stats
    extra = "".join(f", {n} {what}" for n, what in ((s.evicted_conns, "connections evicted"),
                                                     (s.parser_errors, "parser errors")) if n)
    print(f"traced: {s.requests} requests, {s.unanswered} unanswered, {lost} lost events after attach, "
          f"{s.undecodable} undecodable{extra}", file=sys.stderr)
    return 0
