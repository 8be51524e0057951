"""`redis-tracer replay FILE`: the live dashboard driven by a recording, through the same runtime."""
from __future__ import annotations

import sys
from contextlib import nullcontext

from tracer.commands import cli_help
from tracer.errors import UsageError
from tracer.options import REFRESH_HZ, check_refresh, check_stall_ms
from tracer.runtime import session


EXAMPLES = """\
  redis-tracer replay run.rtrace                # the dashboard, at the recorded pace
  redis-tracer replay run.rtrace --speed 10     # ten times faster
  redis-tracer replay run.rtrace --max --plain  # at once, plain summaries"""


def add_parser(sub):
    p = sub.add_parser("replay", help="play a trace file back through the live dashboard")
    p.add_argument("file", metavar="FILE")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=float, default=1.0, metavar="X", help="playback speed (default 1.0)")
    speed.add_argument("--max", action="store_true", help="as fast as possible")
    p.add_argument("--stall-ms", type=float, default=None, help="stall threshold (default: as recorded)")
    p.add_argument("--refresh", type=float, default=REFRESH_HZ, metavar="HZ",
                   help=f"screen refreshes per second (default {REFRESH_HZ:g})")
    p.add_argument("--plain", action="store_true", help="periodic plain-text summaries, no dashboard")
    cli_help.add_fail_on_lost(p)
    return p


def run(args) -> int:
    if not args.max and args.speed <= 0:
        raise UsageError(f"--speed must be positive, not {args.speed:g}")
    check_refresh(args.refresh)
    if args.stall_ms is not None:
        check_stall_ms(args.stall_ms)
    from tracer.views.progress import file_progress

    mode = "plain" if args.plain or not sys.stdout.isatty() else "auto"
    # --max: a progress bar on stderr (a terminal's), unless the dashboard holds the screen
    with file_progress(f"replay {args.file}") if args.max and mode == "plain" else nullcontext() as progress:
        result = session.replay(args.file, speed=None if args.max else args.speed, stall_ms=args.stall_ms,
                                refresh_hz=args.refresh, mode=mode, progress=progress)
    session.print_summary(result, result.header.stall_ms)
    return cli_help.lost_gate(args, result.report.lost_events)
