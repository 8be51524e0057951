"""`redis-tracer report FILE`: the offline analysis of a recording, as the plain summary or one JSON object."""
from __future__ import annotations

import json
import sys

from tracer.commands import cli_help
from tracer.options import STALL_MS, check_stall_ms

EXAMPLES = """\
  redis-tracer report run.rtrace               # stalls, commands, keys, AOF
  redis-tracer report run.rtrace --json | jq . # one JSON object
  redis-tracer report run.rtrace --hist        # log2 histograms, bcc style
  redis-tracer report run.rtrace --hist GET    # ... of GET only
  redis-tracer report run.rtrace --since 10 --until 20   # seconds 10 to 20
  redis-tracer report run.rtrace --fail-on-lost  # exit 3 if events were lost"""


def add_parser(sub):
    p = sub.add_parser("report", help="analyse a trace file: per-command latency, stalls, fsync, connections")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--stall-ms", type=float, default=None, help=f"stall threshold (default: as recorded, {STALL_MS:g})")
    p.add_argument("--hist", nargs="?", const="", default=None, metavar="COMMAND",
                   help="print log2 latency histograms (bcc style) per command and per phase instead of the "
                        "summary; with COMMAND, only that command's")
    cli_help.add_window_args(p)
    cli_help.add_fail_on_lost(p)
    return p


def run(args) -> int:
    from tracer.runtime import offline
    from tracer.runtime.window import Window
    from tracer.views.progress import file_progress

    window = Window.from_args(args)
    if args.stall_ms is not None:
        check_stall_ms(args.stall_ms)   # -1 was taken, and found no stall
    with file_progress(f"report {args.file}") as progress:
        # the histograms cost ~0.4 us per request: only for the outputs that carry them
        header, pipeline = offline.analyse(args.file, args.stall_ms, window=window, progress=progress,
                                           histograms=args.json or args.hist is not None)
    report = pipeline.report(header.first_target)
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), sort_keys=True) + "\n")
    elif args.hist is not None:
        from tracer.views.histograms import histograms_text

        print(histograms_text(report.histograms, args.hist or None))
    else:
        from tracer.dashboards.plain import final_summary

        report.stall_ms = args.stall_ms if args.stall_ms is not None else header.stall_ms or STALL_MS
        print(final_summary(report))
    return cli_help.lost_gate(args, report.lost_events)
