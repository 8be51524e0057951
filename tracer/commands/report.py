"""`redis-tracer report FILE`: the offline analysis of a recording, as tables or one JSON object."""
from __future__ import annotations

import json
import sys


def add_parser(sub):
    p = sub.add_parser("report", help="analyse a trace file: per-command latency, stalls, fsync, connections")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--stall-ms", type=float, default=None, help="stall threshold (default: as recorded, 50)")
    return p


def run(args) -> int:
    from tracer.runtime import offline

    header, pipeline = offline.analyse(args.file, args.stall_ms)
    report = pipeline.report(offline.first_target(header))
    if args.json:
        sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    else:
        from tracer.views.report_text import print_report

        print_report(report, header)
    return 0
