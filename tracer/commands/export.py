"""`redis-tracer export FILE --format chrome -o OUT.json`: open a trace in Perfetto or chrome://tracing;
`--format folded -o OUT.folded`: each stall's on-CPU stacks (unless recorded with --no-why) for flame graphs."""
from __future__ import annotations

import os
import sys

from tracer.errors import TracerError
from tracer.options import check_stall_ms


EXAMPLES = """\
  redis-tracer export run.rtrace -o run.json   # open it in ui.perfetto.dev
  redis-tracer export run.rtrace -o run.json --stall-ms 20   # stalls >= 20 ms"""


def add_parser(sub):
    p = sub.add_parser("export", help="convert a trace file to Chrome Trace Event JSON (Perfetto), or its stalls'"
                                      " stacks to folded format (flamegraph.pl, speedscope)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", choices=["chrome", "folded"], default="chrome",
                   help="chrome: Trace Event JSON; folded: on-CPU stacks per stall (recorded without --no-why)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.json")
    p.add_argument("--stall-ms", type=float, default=None)
    return p


def open_private(path: str):
    """A text file for writing, mode 0600 whatever the umask (it holds keys and client addresses,
    like the trace it comes from); a symlink planted at `path` is not followed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "w")
    except BaseException:
        os.close(fd)
        raise


def run(args) -> int:
    if args.stall_ms is not None:
        check_stall_ms(args.stall_ms)
    tmp = args.output + ".part"
    try:
        out = open_private(tmp)
    except OSError as err:
        raise TracerError(f"cannot write {args.output}: {err.strerror}") from None
    try:
        with out:
            count = _write(args, out)
    except BaseException:
        os.unlink(tmp)  # no half-written export left behind
        raise
    os.replace(tmp, args.output)
    what = "folded stacks" if args.format == "folded" else "trace events"
    print(f"exported: {count} {what} -> {args.output}", file=sys.stderr)
    if args.format == "folded" and not count:
        print("export: no stall in this trace has on-CPU samples (no stall, or recorded with --no-why)",
              file=sys.stderr)
    return 0


def _write(args, out) -> int:
    from tracer.runtime import offline

    if args.format == "folded":
        from tracer.views.export_folded import folded_lines

        header, pipeline = offline.analyse(args.file, args.stall_ms)
        count = 0
        for line in folded_lines(pipeline.report(header.first_target).stalls):
            out.write(line + "\n")
            count += 1
        return count
    from tracer.views.export_chrome import ChromeTraceWriter

    from tracer.views.progress import file_progress

    writer = ChromeTraceWriter(out)
    with file_progress(f"export {args.file}") as progress:
        header, pipeline = offline.analyse(args.file, args.stall_ms, on_request=writer.request, on_sync=writer.sync,
                                           progress=progress)
    first = pipeline.stitcher.first_ts  # the origin of the report's start_s
    pid = header.first_target.get("pid") or 0
    for stall in pipeline.report(header.first_target).stalls:
        writer.stall(pid, stall, first)
    writer.close()
    return writer.count
