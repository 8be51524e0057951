"""`redis-tracer diagnose`: trace headless for a while, then print the diagnosis.

Stalls longest first (culprit, duration, victims, added latency, advice), hot and big keys,
and the per-command figures; `--json` prints the report as one JSON object instead.
"""
from __future__ import annotations

import json
import sys

from tracer.options import WHY_IN_DIAGNOSE, TraceOptions
from tracer.runtime import runner, session


def add_parser(sub):
    p = sub.add_parser("diagnose", help="trace for a while (--duration or Ctrl-C), then explain the stalls: "
                                        "culprits, victims, advice; hot and big keys")
    runner.add_target_args(p)
    runner.add_analysis_args(p, refresh=False)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(why=WHY_IN_DIAGNOSE)
    return p


def run(args) -> int:
    options = TraceOptions.from_args(args)
    targets = runner.resolve_targets(options)
    if options.duration is None:
        print("diagnose: tracing until Ctrl-C (or pass --duration S)", file=sys.stderr, flush=True)
    result = session.run_traced(options, targets, title="diagnose", mode="quiet")
    if args.json:
        print(json.dumps(result.report.to_json(), default=str), flush=True)
    else:
        session.print_summary(result, options.stall_ms)
    return 0
