"""`redis-tracer trace`: one line (or JSON object) per completed request."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from tracer.analyze.blocked_by import StallTracker, VictimHold
from tracer.analyze.request_filter import RequestFilter, command_list
from tracer.commands import cli_help
from tracer.errors import UsageError
from tracer.options import TraceOptions
from tracer.runtime import runner
from tracer.stitch.model import Clock
from tracer.views.request_line import request_line

EXAMPLES = """\
  redis-tracer trace                    # every request, one line each
  redis-tracer trace --port 6379 --json # JSON Lines
  redis-tracer trace --min-ms 10        # only requests of 10 ms or more
  redis-tracer trace --command GET,SET  # only GETs and SETs
  redis-tracer trace --client 10.0.0.7  # one client: ip, ip:port or :port
  redis-tracer trace --key-prefix user: # only keys starting with user:
  redis-tracer trace --engine --min-ms 5 --command HGETALL  # kernel-filtered
  redis-tracer trace --duration 10 --fail-on-lost   # exit 3 if events lost"""

FILTERS_NOTE = """\
filters:
  With --engine, --min-ms and --command are applied in the kernel (its slow
  threshold, and an allow-list in its command table: a name the kernel does not
  know is filtered in user space); --client and --key-prefix are applied in user
  space to the requests the kernel sent up. With --full every request goes up
  and all four are applied in user space."""


def _commands(text: str) -> tuple:
    try:
        return command_list(text)
    except UsageError as err:     # argparse prints it with the usage line (exit 2)
        raise argparse.ArgumentTypeError(str(err)) from None


def add_parser(sub):
    p = sub.add_parser("trace", help="print every request with its phases (text or JSON lines)")
    runner.add_target_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object per request (JSON Lines)")
    p.add_argument("--min-ms", type=float, metavar="MS",
                   help="only requests at least this slow (in the default engine mode it is the kernel's "
                        "threshold, so only those come up)")
    p.add_argument("--command", dest="commands", type=_commands, metavar="CMD[,CMD...]",
                   help="only these commands, e.g. GET,SET (a name matches its subcommands: CLIENT; with "
                        "--engine the kernel filters)")
    p.add_argument("--client", metavar="ADDR",
                   help="only this client: ip:port, ip (any port) or :port (user space)")
    p.add_argument("--key-prefix", metavar="PREFIX", help="only requests whose first key starts with PREFIX "
                                                          "(user space)")
    cli_help.add_fail_on_lost(p)
    p.description = FILTERS_NOTE
    return p


def run(args) -> int:
    from tracer.stitch.stitcher import Stitcher

    options = TraceOptions.from_args(args)
    targets = runner.resolve_targets(options)
    clock = Clock()
    out = sys.stdout
    stalls = StallTracker(options.stall_ms)     # a victim's JSON names the stall that delayed it
    keep = RequestFilter(min_ms=options.slow_ms, commands=options.commands, client=args.client,
                         key_prefix=args.key_prefix)
    hold = VictimHold(stalls)

    def write_json(req, blocked):
        if keep.empty or keep(req):
            doc = req.to_json(clock)
            if blocked is not None:
                doc["blocked_by"] = blocked
            out.write(json.dumps(doc) + "\n")

    def tick(final: bool = False):
        for req, blocked in hold.release(final):
            write_json(req, blocked)
        out.flush()

    if args.json:
        def emit(req):
            ready, blocked = hold.take(req)     # every request, filtered or not: culprits make the stalls
            if ready:
                write_json(req, blocked)
    else:
        def emit(req):
            if keep.empty or keep(req):
                out.write(request_line(req, clock) + "\n")
    if options.mode == "engine":
        if options.slow_ms is None:     # every request (batch) goes up as a record: `trace` prints each
            options = dataclasses.replace(options, slow_ms=0.0)
        # one line per REQ record, the kernel's pre-stitched request (the stitcher only names clients)
        from tracer.runtime.pipeline import Pipeline

        pipeline = Pipeline(stall_ms=options.stall_ms, on_request=emit, engine=True)
        stitcher, consume = pipeline.stitcher, pipeline.feed
        stalls.follow(pipeline.analyzer.detector)
    else:
        stitcher = Stitcher(on_request=emit, show_values=options.show_values, uprobe_exec=options.exec_probes,
                            on_busy=stalls.on_busy, on_sync=stalls.on_sync, on_sched=stalls.on_sched)
        consume = stitcher.feed_raw
    session = runner.attach(options, targets)
    try:
        if options.commands and options.mode == "engine":
            where = "the kernel" if getattr(session, "kernel_commands", None) else \
                "user space (a name the kernel's command table lacks)"
            print(f"trace: --command filtered in {where}", file=sys.stderr, flush=True)
        runner.drain_loop(session, consume, options.duration, options.poll_ms, tick=tick)
        stitcher.finish()
        tick(final=True)
        lost = session.counters()["lost"]
    finally:
        session.close()
    s = stitcher.stats
    if options.mode == "engine":
        # undecodable: of the bytes the kernel left to user space (the stitcher decodes them as --full)
        print(f"traced: {pipeline.engine.records} request records, {lost} lost events after attach, "
              f"{s.undecodable} undecodable", file=sys.stderr)
        return cli_help.lost_gate(args, lost)
    extra = "".join(f", {n} {what}" for n, what in ((s.evicted_conns, "connections evicted"),
                                                     (s.parser_errors, "parser errors")) if n)
    print(f"traced: {s.requests} requests, {s.unanswered} unanswered, {lost} lost events after attach, "
          f"{s.undecodable} undecodable{extra}", file=sys.stderr)
    return cli_help.lost_gate(args, lost)
