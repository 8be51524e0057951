"""`redis-tracer live`: the live dashboard (or a plain periodic summary when stdout is not a TTY).

Every poll of the ring buffer goes drain → (record) → stitch → analyze; the screen is only
rendered on the drain loop's tick, --refresh times a second, so rendering never holds up
draining. Ctrl-C, SIGTERM, --duration or the target exiting end the run cleanly and print the
final summary. The run itself is tracer.runtime.session's, shared with demo, diagnose, record and replay.
"""
from __future__ import annotations

from tracer.options import TraceOptions
from tracer.runtime import runner, session


def add_parser(sub):
    p = sub.add_parser("live", help="live dashboard: latency per command, request path, stalls with culprits "
                                    "and victims")
    runner.add_target_args(p)
    runner.add_analysis_args(p)
    p.add_argument("--record", metavar="FILE", help="also write every probe record to a trace file "
                                                     "(replay it later)")
    p.add_argument("--svg", metavar="FILE", help="at the end, save the last dashboard frame as an SVG image")
    return p


def run(args) -> int:
    from tracer.dashboards.live import save_svg

    options = TraceOptions.from_args(args)
    result = session.run_traced(options, runner.resolve_targets(options), title="live")
    if args.svg:
        save_svg(args.svg, result.snapshot, result.header)
    session.print_summary(result, options.stall_ms)
    return 0
