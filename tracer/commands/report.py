"""`redis-tracer report FILE`: the offline analysis of a recording, as the plain summary or one JSON object."""
from __future__ import annotations

import json
import sys

from tracer.options import STALL_MS


def add_parser(sub):
    p = sub.add_parser("report", help="analyse a trace file: per-command latency, stalls, fsync, connections")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--stall-ms", type=float, default=None, help=f"stall threshold (default: as recorded, {STALL_MS:g})")
    return p


def run(args) -> int:
    from tracer.runtime import offline

    header, pipeline = offline.analyse(args.file, args.stall_ms)
    report = pipeline.report(header.first_target)
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), sort_keys=True) + "\n")
    else:
        from tracer.dashboards.plain import final_summary

        report.stall_ms = args.stall_ms if args.stall_ms is not None else header.stall_ms or STALL_MS
        print(final_summary(report))
    return 0
