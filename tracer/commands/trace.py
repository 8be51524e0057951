"""`redis-tracer trace`: one line (or JSON object) per completed request."""
from __future__ import annotations

import dataclasses
import json
import sys

from tracer.options import TraceOptions
from tracer.runtime import runner
from tracer.stitch.model import Clock
from tracer.views.request_line import request_line


def add_parser(sub):
    p = sub.add_parser("trace", help="print every request with its phases (text or JSON lines)")
    runner.add_target_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object per request (JSON Lines)")
    p.add_argument("--min-ms", type=float, metavar="MS",
                   help="only requests at least this slow (in the default engine mode it is the kernel's "
                        "threshold, so only those come up)")
    return p


def run(args) -> int:
    from tracer.stitch.stitcher import Stitcher

    options = TraceOptions.from_args(args)
    targets = runner.resolve_targets(options)
    clock = Clock()
    out = sys.stdout
    if args.json:
        def emit(req):
            out.write(json.dumps(req.to_json(clock)) + "\n")
    else:
        def emit(req):
            out.write(request_line(req, clock) + "\n")
    if options.slow_ms is not None:
        min_ns, emit_all = options.slow_ms * 1e6, emit

        def emit(req):
            latency = req.latency_ns
            if latency is not None and latency >= min_ns:
                emit_all(req)
    if options.mode == "engine":
        if options.slow_ms is None:     # every request (batch) goes up as a record: `trace` prints each
            options = dataclasses.replace(options, slow_ms=0.0)
        # one line per REQ record, the kernel's pre-stitched request (the stitcher only names clients)
        from tracer.runtime.pipeline import Pipeline

        pipeline = Pipeline(stall_ms=options.stall_ms, on_request=emit, engine=True)
        stitcher, consume = pipeline.stitcher, pipeline.feed
    else:
        stitcher = Stitcher(on_request=emit, show_values=options.show_values, uprobe_exec=options.exec_probes)
        consume = stitcher.feed_raw
    session = runner.attach(options, targets)
    try:
        runner.drain_loop(session, consume, options.duration, options.poll_ms, tick=out.flush)
        stitcher.finish()
        out.flush()
        lost = session.counters()["lost"]
    finally:
        session.close()
    s = stitcher.stats
    if options.mode == "engine":
        # undecodable: of the bytes the kernel left to user space (the stitcher decodes them as --full)
        print(f"traced: {pipeline.engine.records} request records, {lost} lost events after attach, "
              f"{s.undecodable} undecodable", file=sys.stderr)
        return 0
    extra = "".join(f", {n} {what}" for n, what in ((s.evicted_conns, "connections evicted"),
                                                     (s.parser_errors, "parser errors")) if n)
    print(f"traced: {s.requests} requests, {s.unanswered} unanswered, {lost} lost events after attach, "
          f"{s.undecodable} undecodable{extra}", file=sys.stderr)
    return 0
