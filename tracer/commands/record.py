"""`redis-tracer record`: headless capture of the raw probe records to a trace file."""
from __future__ import annotations

import json
import sys

from tracer import runner, trace_header
from tracer.errors import TracerError
from tracer.model import Clock


def add_parser(sub):
    p = sub.add_parser("record", help="capture raw probe records to a trace file (replay/report later)")
    runner.add_target_args(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="trace file to create (mode 0600)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.add_argument("--stall-ms", type=float, default=50, help="stall threshold for --json-out (default 50)")
    p.add_argument("--json-out", metavar="FILE", help="also write the live analysis as report JSON")
    return p


def run(args) -> int:
    from tracer.pipeline import Pipeline
    from tracer.recording import TraceWriter

    runner.check_duration(args)
    targets = runner.resolve_targets(args)
    clock = Clock()
    session = runner.attach(args, targets)
    try:
        header = trace_header.build(session, targets, clock, args.stall_ms, args.show_values)
        writer = TraceWriter(args.output, header, overwrite=args.overwrite)
        pipeline = Pipeline(stall_ms=args.stall_ms, show_values=args.show_values,
                            uprobe_exec=session.exec_attached, writer=writer, targets=header["targets"])
        failure = None
        try:
            runner.drain_loop(session, pipeline.feed, args.duration, args.poll_ms)
        except TracerError as err:  # disk full: what is on disk stays readable
            failure = err
        pipeline.finish()
        summary = {"records": writer.records_written, "requests": pipeline.stitcher.stats.requests,
                   "lost_events": pipeline.lost_events}
        if failure is None:
            writer.write_trailer(summary)
            writer.close()
        else:
            writer.close(aborted=str(failure))
            raise failure
    finally:
        session.close()
    if args.json_out:
        from tracer.commands.export import open_private

        try:
            with open_private(args.json_out) as f:
                json.dump(pipeline.report(header["targets"][0]), f, sort_keys=True)
        except OSError as err:
            raise TracerError(f"cannot write {args.json_out}: {err.strerror} (the trace itself is complete: "
                              f"{args.output})") from None
    lost = pipeline.lost_events
    print(f"recorded: {writer.records_written} records, {summary['requests']} requests, {lost} lost events after attach "
          f"-> {args.output}", file=sys.stderr)
    return 0
