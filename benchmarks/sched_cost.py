"""What the sched probes (probes/sched.c, `--why`) cost, from the kernel's own accounting.

    sudo .venv/bin/python benchmarks/sched_cost.py [--rounds 3] [--requests 50000]

Starts its own redis-server, attaches the full probe set with the sched probes, turns on BPF run-time
stats (BPF_ENABLE_STATS, for this process's lifetime only) and runs redis-benchmark GET+SET -c 50 per
round. Prints, per sched program: invocations (host-wide: sched_switch runs at every context switch of
every process), mean ns per invocation, and the total per traced request; plus the records they made.
Throughput/p99 ratios with and without the sched probes come from `overhead.py --configs
plain,why,diagnose-engine,diagnose-engine-why` (interleaved); this one says where the time goes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))

from tracer.engine.bpfstats import close_stats, enable_stats, prog_stats  # noqa: E402
from tracer.kernel import events  # noqa: E402
from tracer.kernel.bpf_session import ProbeSession  # noqa: E402
from tracer.kernel.target import find_target  # noqa: E402
from tracer.sandbox.redis_server import RedisServer  # noqa: E402

SCHED_PROGS = ("tracepoint__sched__sched_switch", "tracepoint__sched__sched_wakeup",
               "tracepoint__exceptions__page_fault_user", "tracepoint__sched__sched_process_fork",
               "tracepoint__syscalls__sys_enter_clone")


def one_round(session, port: int, requests: int, fds: dict) -> dict:
    kinds: dict = {}
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            for raw in session.drain():
                k = events.KIND_NAMES.get(raw[events.KIND_BYTE], "?")
                kinds[k] = kinds.get(k, 0) + 1
            time.sleep(0.1)

    t = threading.Thread(target=drain, daemon=True)
    before = prog_stats(fds)
    t.start()
    started = time.monotonic()
    subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-c", "50",
                    "-t", "get,set", "-q"], check=True, capture_output=True, timeout=600)
    seconds = time.monotonic() - started
    after = prog_stats(fds)
    stop.set()
    t.join(5)
    traced = 2 * requests
    out = {"seconds": round(seconds, 2), "records": {k: v for k, v in kinds.items()
                                                     if k in ("offcpu", "runq", "fork", "loop")}}
    for name in fds:
        cnt = after.get(name, {}).get("run_cnt", 0) - before.get(name, {}).get("run_cnt", 0)
        ns = after.get(name, {}).get("run_time_ns", 0) - before.get(name, {}).get("run_time_ns", 0)
        out[name] = {"invocations_per_s": round(cnt / seconds), "ns_each": round(ns / cnt, 1) if cnt else None,
                     "ns_per_request": round(ns / traced, 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=50_000)
    args = ap.parse_args()
    stats_fd = enable_stats()
    if stats_fd is None:
        print("the kernel refused BPF_ENABLE_STATS", file=sys.stderr)
        return 1
    rounds = []
    with RedisServer() as server:
        session = ProbeSession([find_target(port=server.port)], why=True)
        session.attach()
        try:
            fds = {name: session.bpf.funcs[name.encode()].fd for name in SCHED_PROGS
                   if name.encode() in session.bpf.funcs}
            for r in range(args.rounds):
                rounds.append(one_round(session, server.port, args.requests, fds))
                print(f"round {r + 1}: {json.dumps(rounds[-1])}", file=sys.stderr, flush=True)
        finally:
            session.close()
            close_stats(stats_fd)
    print(json.dumps({"rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
