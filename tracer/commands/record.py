"""`redis-tracer record`: headless capture of the raw probe records to a trace file."""
from __future__ import annotations

import dataclasses
import json
import sys

from tracer.commands import cli_help
from tracer.errors import TracerError
from tracer.options import STALL_MS, TraceOptions
from tracer.runtime import runner, session


EXAMPLES = """\
  redis-tracer record -o run.rtrace --duration 60   # then: report run.rtrace
  redis-tracer record -o run.rtrace --engine        # the engine's, until Ctrl-C
  redis-tracer record -o run.rtrace --json-out run.json   # and the live report
  redis-tracer record -o run.rtrace --fail-on-lost  # exit 3 if events were lost"""


def add_parser(sub):
    p = sub.add_parser("record", help="capture raw probe records to a trace file (replay/report later)")
    runner.add_target_args(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="trace file to create (mode 0600)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.add_argument("--stall-ms", type=float, default=STALL_MS,
                   help=f"stall threshold for --json-out (default {STALL_MS:g})")
    p.add_argument("--json-out", metavar="FILE", help="also write the live analysis as report JSON")
    cli_help.add_fail_on_lost(p)
    return p


def run(args) -> int:
    from tracer.commands.export import open_private

    options = dataclasses.replace(TraceOptions.from_args(args), record_path=args.output)
    targets = runner.resolve_targets(options)
    result = session.run_traced(options, targets, title="record", mode="quiet", overwrite=args.overwrite,
                                histograms=bool(args.json_out))     # its JSON is `report --json`'s
    if args.json_out:
        try:
            with open_private(args.json_out) as f:
                json.dump(result.report.to_json(), f, sort_keys=True)
        except OSError as err:
            raise TracerError(f"cannot write {args.json_out}: {err.strerror} (the trace itself is complete: "
                              f"{args.output})") from None
    done = result.recorded
    print(f"recorded: {done['records']} records, {done['requests']} requests, {done['lost_events']} lost events after attach "
          f"-> {args.output}", file=sys.stderr)
    return cli_help.lost_gate(args, done["lost_events"])
