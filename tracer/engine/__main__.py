"""`python -m tracer.engine --port P [--json]`: the engine alone, for benchmarks and checks until it
is wired into live/diagnose/record (phase 2). Drains records every --poll-ms, reads the histograms
every --refresh-s, prints `attached: ...` on stderr once live, and on SIGINT one summary (JSON with
--json): per-command counts and percentiles, lost records, kernel counters and, with --bpf-stats,
the kernel's run time per probe."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from tracer.engine import bpfstats
from tracer.engine.raw import RawCounter
from tracer.engine.records import is_request
from tracer.engine.session import EngineConfig, EngineSession
from tracer.errors import TracerError
from tracer.kernel.target import find_target


def _stop(_signum, _frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tracer.engine", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--stall-ms", type=float, default=EngineConfig.stall_ms)
    ap.add_argument("--slow-ms", type=float, default=None)
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--poll-ms", type=float, default=100)
    ap.add_argument("--refresh-s", type=float, default=1.0)
    ap.add_argument("--bpf-stats", action="store_true", help="turn on the kernel's BPF run-time stats while running")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    try:
        target = find_target(pid=args.pid, port=args.port)
        session = EngineSession([target], EngineConfig(stall_ms=args.stall_ms, slow_ms=args.slow_ms,
                                                       sample=args.sample))
        stats_fd = bpfstats.enable_stats() if args.bpf_stats else None
        session.attach()
    except TracerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"attached: {session.describe()}", file=sys.stderr, flush=True)
    raw = RawCounter()
    reqs = 0
    snap = None
    next_refresh = time.monotonic() + args.refresh_s
    try:
        while True:
            time.sleep(args.poll_ms / 1000)
            records = session.drain()
            raw.feed(records)
            reqs += sum(1 for r in records if is_request(r))
            if time.monotonic() >= next_refresh:
                snap = session.snapshot()
                next_refresh = time.monotonic() + args.refresh_s
    except KeyboardInterrupt:
        pass
    records = session.drain()
    raw.feed(records)
    reqs += sum(1 for r in records if is_request(r))
    snap = session.snapshot()
    prog_fds = {(name.decode() if isinstance(name, bytes) else name): fn.fd for name, fn in session.bpf.funcs.items()}
    progs = bpfstats.prog_stats(prog_fds) if args.bpf_stats else {}
    lost = session.counters()["lost"]
    session.close()
    bpfstats.close_stats(stats_fd)
    commands = {name: {"count": cs.count, "done": cs.done, "p50_us": cs.percentile(50) / 1e3,
                       "p99_us": cs.percentile(99) / 1e3, "p999_us": cs.percentile(99.9) / 1e3}
                for name, cs in snap.commands(0).items()}
    total = sum(cs.count for cs in snap.commands(0).values()) + sum(raw.counts.values())
    report = {"requests": total, "lost_events": lost, "records": reqs, "commands": commands,
              "raw_commands": {name: n for (_, name), n in raw.counts.items()}, "counters": snap.counters,
              "bpf_stats": progs}
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        for name, c in sorted(commands.items()):
            print(f"{name:<16} {c['count']:>10} p50 {c['p50_us']:.1f}us p99 {c['p99_us']:.1f}us")
        print(f"lost {lost} records {reqs} counters {snap.counters}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
