"""`redis-tracer diagnose`: trace headless for a while, then print the diagnosis.

Stalls longest first (culprit, duration, victims, added latency, advice), hot and big keys,
and the per-command figures; `--json` prints Analyzer.report() as one JSON object instead.
"""
from __future__ import annotations

import json
import sys

from tracer import runner
from tracer.commands import live


def add_parser(sub):
    p = sub.add_parser("diagnose", help="trace for a while (--duration or Ctrl-C), then explain the stalls: "
                                        "culprits, victims, advice; hot and big keys")
    runner.add_target_args(p)
    live.add_analysis_args(p, refresh=False)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p


def run(args) -> int:
    live.check_args(args)
    target = runner.resolve_targets(args)
    if args.duration is None:
        print("diagnose: tracing until Ctrl-C (or pass --duration S)", file=sys.stderr, flush=True)
    result = live.run_traced(args, target, title="diagnose", mode="quiet")
    if args.json:
        print(json.dumps(result.report, default=str), flush=True)
    else:
        live.print_summary(result, args.stall_ms)
    return 0
