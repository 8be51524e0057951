"""`redis-tracer diagnose`: trace headless for a while (or read a recording), then print the diagnosis.

Stalls longest first (culprit, duration, victims, added latency, advice), hot and big keys,
and the per-command figures; `--json` prints the report as one JSON object instead.
"""
from __future__ import annotations

import json
import sys

from tracer.commands import cli_help
from tracer.errors import EXIT_GATE, UsageError
from tracer.options import WHY_IN_DIAGNOSE, TraceOptions
from tracer.runtime import runner, session

EXAMPLES = """\
  redis-tracer diagnose --duration 30          # trace 30 s, explain the stalls
  redis-tracer diagnose --port 6379 --engine   # always-on engine, until Ctrl-C
  redis-tracer diagnose run.rtrace --since 60 --until 90   # a recording's window
  redis-tracer diagnose --duration 60 --fail-on-stall      # exit 3 on a stall"""


def add_parser(sub):
    p = sub.add_parser("diagnose", help="trace for a while (--duration or Ctrl-C), then explain the stalls: "
                                        "culprits, victims, advice; hot and big keys")
    p.add_argument("file", metavar="FILE", nargs="?",
                   help="diagnose this recording instead of tracing (see `record`)")
    runner.add_target_args(p)
    runner.add_analysis_args(p, refresh=False)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    cli_help.add_window_args(p)
    cli_help.add_fail_on_lost(p)
    p.add_argument("--fail-on-stall", action="store_true",
                   help=f"exit {EXIT_GATE} when any stall was found (the diagnosis is printed in full first)")
    p.set_defaults(why=WHY_IN_DIAGNOSE)
    return p


def run(args) -> int:
    if args.file is None and (args.since is not None or args.until is not None):
        raise UsageError("--since/--until choose a window of a recording: name the FILE "
                         "(redis-tracer diagnose FILE --since S)")
    if args.file is not None:
        report = _recorded(args)
    else:
        options = TraceOptions.from_args(args)
        targets = runner.resolve_targets(options)
        if options.duration is None:
            print("diagnose: tracing until Ctrl-C (or pass --duration S)", file=sys.stderr, flush=True)
        result = session.run_traced(options, targets, title="diagnose", mode="quiet", histograms=args.json)
        report = session.summary_report(result, options.stall_ms) if not args.json else result.report
    if args.json:
        print(json.dumps(report.to_json(), default=str), flush=True)
    else:
        from tracer.dashboards.plain import final_summary

        print(final_summary(report), flush=True)
    return cli_help.lost_gate(args, report.lost_events) or _stall_gate(args, report)


def _recorded(args):
    from tracer.options import check_stall_ms
    from tracer.runtime import offline
    from tracer.runtime.window import Window
    from tracer.views.progress import file_progress

    window = Window.from_args(args)
    check_stall_ms(args.stall_ms)
    with file_progress(f"diagnose {args.file}") as progress:
        header, pipeline = offline.analyse(args.file, args.stall_ms, window=window, progress=progress,
                                           histograms=args.json)
    report = pipeline.report(header.first_target)
    report.stall_ms = args.stall_ms
    return report


def _stall_gate(args, report) -> int:
    if args.fail_on_stall and report.stalls:
        longest = max(s.duration_ms for s in report.stalls)
        print(f"redis-tracer: {len(report.stalls)} stalls, the longest {longest:.0f} ms (--fail-on-stall)",
              file=sys.stderr)
        return EXIT_GATE
    return 0
