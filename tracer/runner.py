"""What every tracing command shares: target options, attaching, the drain loop, clean stops."""
from __future__ import annotations

import signal
import sys
import time

from tracer.bpf_session import ProbeSession
from tracer.errors import TracerError
from tracer.target import Target, find_target, query_redis_info


COUNTERS_S = 1.0  # kernel counters (lost records, loop busy/idle) join the stream this often


def add_target_args(parser, duration_default=None) -> None:
    parser.add_argument("--pid", type=int, help="pid of the redis-server to trace")
    parser.add_argument("--port", type=int, help="TCP port the redis-server listens on (found via /proc)")
    parser.add_argument("--duration", type=float, default=duration_default, metavar="S",
                        help="stop after S seconds (default: until Ctrl-C/SIGTERM)")
    parser.add_argument("--exec-probes", action="store_true",
                        help="uprobes on redis-server's call() for exact execution time (costs throughput)")
    parser.add_argument("--capture-bytes", type=int, default=4096, metavar="N",
                        help="bytes of each read/write copied for RESP decoding (power of two, default 4096)")
    parser.add_argument("--poll-ms", type=int, default=50, help="ring buffer drain interval (default 50)")
    parser.add_argument("--show-values", action="store_true",
                        help="show values on screen and in files (off: values are masked; secrets always are)")


class StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes its drain and everything is flushed."""

    def __init__(self):
        self.stopped = False
        self.reason = ""
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame):
        self.stopped = True
        self.reason = signal.Signals(signum).name

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def resolve_target(args) -> Target:
    target = find_target(pid=args.pid, port=args.port)
    # Ask Redis before attaching, so our own connection is not in the trace.
    target.info = query_redis_info(target)
    return target


def attach(args, target: Target) -> ProbeSession:
    session = ProbeSession([target], exec_probes=args.exec_probes, capture_max=args.capture_bytes)
    session.attach()
    print(f"attached: {session.describe()}", file=sys.stderr, flush=True)
    return session


def drain_loop(session: ProbeSession, consume, duration: float | None, poll_ms: int,
               tick=None, tick_s: float = 0.5) -> str:
    """Drain until stopped; `consume(records)` gets every batch, `tick()` runs every tick_s.
    Returns why it stopped."""
    stop = StopFlag()
    deadline = time.monotonic() + duration if duration else None
    next_tick = time.monotonic() + tick_s
    next_counters = time.monotonic() + COUNTERS_S
    interval = max(1, poll_ms) / 1000.0
    reason = "stopped"
    try:
        while True:
            consume(session.drain())
            now = time.monotonic()
            if now >= next_counters:
                consume([session.counters_record()])
                next_counters = now + COUNTERS_S
            if tick is not None and now >= next_tick:
                tick()
                next_tick = now + tick_s
            if stop.stopped:
                reason = stop.reason
                break
            if deadline and now >= deadline:
                reason = "duration"
                break
            if not session.targets_alive():
                reason = "target exited"
                print("redis-tracer: the traced redis-server exited; stopping", file=sys.stderr)
                break
            time.sleep(interval)
        time.sleep(0.01)
        consume(session.drain())  # what the probes wrote while we were deciding to stop
        consume([session.counters_record()])
    finally:
        stop.restore()
    return reason


def check_duration(args) -> None:
    if args.duration is not None and args.duration <= 0:
        raise TracerError(f"--duration must be positive, not {args.duration}")
