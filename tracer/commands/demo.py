"""`redis-tracer demo`: see the tracer work on a Redis of its own, with trouble built in.

Starts a throw-away redis-server (127.0.0.1, free port, temp dir, AOF everysec), attaches the
probes, then starts a bounded mixed workload (tracer.sandbox.workload) whose trouble thread builds and
DELetes a BigKey every ~6 s and runs a slow Lua script every ~9 s, and whose cache thread sets off a
cache stampede and the inventory read-modify-write race every ~7 s. The live dashboard shows it
for --duration seconds; then the diagnosis is printed and everything the demo started (server,
temp dir, threads) is removed, also on Ctrl-C/SIGTERM/SIGHUP.
"""
from __future__ import annotations

import signal
import sys

from tracer.errors import UsageError
from tracer.options import TraceOptions
from tracer.runtime import runner, session

DEMO_POLL_MS = 50   # the demo's own small server: drain often, for a lively screen


EXAMPLES = """\
  redis-tracer demo                       # 30 s of a Redis with trouble built in
  redis-tracer demo --duration 60 --engine     # through the always-on engine
  redis-tracer demo --no-dashboard | tee demo.log   # plain summary blocks"""


def add_parser(sub):
    p = sub.add_parser("demo", help="trace a throw-away redis-server under a mixed workload with a BigKey, "
                                    "a slow script, a cache stampede and an inventory race, live")
    p.add_argument("--duration", type=float, default=30, metavar="S", help="seconds to run (default 30)")
    runner.add_analysis_args(p)
    runner.add_mode_args(p)
    runner.add_ebpf_arg(p)
    p.add_argument("--no-dashboard", action="store_true",
                   help="no live screen: print a plain summary block per refresh instead")
    p.add_argument("--clients", type=int, default=4, help="workload client threads (default 4)")
    p.add_argument("--record", metavar="FILE", help="also write the probe records to a trace file")
    p.add_argument("--svg", metavar="FILE", help="at the end, save the last dashboard frame as an SVG image")
    p.set_defaults(poll_ms=DEMO_POLL_MS)
    return p


class _Hangup(KeyboardInterrupt):
    """SIGTERM/SIGHUP outside the drain loop: unwind through the finally blocks (server stop)."""


def _raise_hangup(signum, _frame):
    raise _Hangup(signal.Signals(signum).name)


def run(args) -> int:
    from tracer.dashboards.live import save_svg
    from tracer.kernel.privileges import require_tracing_privileges
    from tracer.kernel.target import find_target, query_redis_info
    from tracer.sandbox.redis_server import RedisServer
    from tracer.sandbox.workload import Workload

    options = TraceOptions.from_args(args)
    if not 1 <= args.clients <= 32:
        raise UsageError(f"--clients must be between 1 and 32, not {args.clients}")
    require_tracing_privileges()  # before starting anything
    old = {s: signal.signal(s, _raise_hangup) for s in (signal.SIGTERM, signal.SIGHUP)}
    # AOF everysec gives the AOF panel something to show; automatic rewrites (on by default) keep the
    # file bounded however long the demo runs; DEL must free on the main thread (the point of it).
    server = RedisServer(appendonly="yes", appendfsync="everysec", lazyfree_lazy_user_del="no")
    workload = None
    result = None
    try:
        server.start()
        print(f"demo: redis-server pid {server.pid} on 127.0.0.1:{server.port} (data in {server.dir}); "
              f"{args.clients} clients, a BigKey DEL every ~6 s, a slow Lua script every ~9 s, "
              f"a cache stampede and an inventory race every ~7 s",
              file=sys.stderr, flush=True)
        target = find_target(pid=server.pid)
        target.info = query_redis_info(target)
        workload = Workload(server.port, clients=args.clients, max_seconds=args.duration + 30)
        mode = "plain" if args.no_dashboard else "auto"
        result = session.run_traced(options, [target], title="demo", mode=mode, on_attached=workload.start,
                                    on_stop=workload.stop)
    finally:
        try:
            if workload is not None:
                workload.stop()
        finally:
            pid, where = server.pid, server.dir
            server.stop()
            for s, handler in old.items():
                signal.signal(s, handler)
            if pid:
                print(f"demo: stopped redis-server pid {pid}, removed {where}", file=sys.stderr, flush=True)
    if args.svg:
        save_svg(args.svg, result.snapshot, result.header, title="redis-tracer demo")
    session.print_summary(result, options.stall_ms)
    if workload.stats["errors"]:
        print(f"demo: the workload saw {workload.stats['errors']} errors (last: {workload.last_error})",
              file=sys.stderr)
    return 0
