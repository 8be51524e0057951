"""`redis-tracer live`: the live dashboard (or a plain periodic summary when stdout is not a TTY).

Every poll of the ring buffer goes drain → (record) → stitch → analyze; the screen is only
rendered on the drain loop's tick, --refresh times a second, so rendering never holds up
draining. Ctrl-C, SIGTERM, --duration or the target exiting end the run cleanly and print the
final summary. The run itself is tracer.runtime.session's, shared with demo, diagnose, record and replay.

With --interval S (and --count N) it prints each interval's own figures, like `biolatency 1 10`
and `redis-cli --latency-history`: one JSON line per interval when stdout is not a terminal
(--plain: one plain block), the dashboard refreshed every S seconds on a terminal.
"""
from __future__ import annotations

import dataclasses
import sys

from tracer.commands import cli_help
from tracer.errors import UsageError
from tracer.options import TraceOptions
from tracer.runtime import runner, session

EXAMPLES = """\
  redis-tracer live                        # the only redis-server's dashboard
  redis-tracer live --port 7000,7001,7002  # a cluster's nodes, one panel each
  redis-tracer live --interval 1 --count 10 | jq .rps   # a JSON line a second
  redis-tracer live --interval 5 --plain > lat.log      # a block every 5 s
  redis-tracer live --engine --record run.rtrace        # always-on, recorded"""


def add_parser(sub):
    p = sub.add_parser("live", help="live dashboard: latency per command, request path, stalls with culprits "
                                    "and victims")
    runner.add_target_args(p)
    runner.add_analysis_args(p)
    p.add_argument("--record", metavar="FILE", help="also write every probe record to a trace file "
                                                     "(replay it later)")
    p.add_argument("--svg", metavar="FILE", help="at the end, save the last dashboard frame as an SVG image")
    p.add_argument("--interval", type=float, metavar="S",
                   help="print each S seconds' own figures (not cumulative): one JSON line per interval "
                        "when stdout is not a terminal")
    p.add_argument("--count", type=int, metavar="N", help="stop after N intervals (with --interval)")
    p.add_argument("--plain", action="store_true", help="with --interval: one plain-text block per interval "
                                                        "instead of a JSON line")
    cli_help.add_fail_on_lost(p)
    return p


def run(args) -> int:
    from tracer.dashboards.live import save_svg

    mode = "auto"
    if args.count is not None and args.interval is None:
        raise UsageError("--count N counts intervals: give --interval S too")
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be at least 1, not {args.count}")
    options = TraceOptions.from_args(args)
    if args.interval is not None:
        from tracer.runtime.intervals import check_interval
        options = dataclasses.replace(options, refresh_hz=1.0 / check_interval(args.interval))
        if args.plain:
            mode = "plain-intervals"
        elif not sys.stdout.isatty():
            mode = "json-intervals"
    result = session.run_traced(options, runner.resolve_targets(options), title="live", mode=mode, count=args.count)
    if args.svg:
        save_svg(args.svg, result.snapshot, result.header)
    if mode == "json-intervals":        # stdout holds JSON lines only: the summary goes to stderr
        session.print_summary(result, options.stall_ms, out=sys.stderr)
    else:
        session.print_summary(result, options.stall_ms)
    return cli_help.lost_gate(args, result.report.lost_events)
