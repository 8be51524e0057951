"""What --why's sampler costs Redis, from the kernel's own accounting of its BPF program.

    sudo .venv/bin/python benchmarks/why_cost.py [--requests 200000] [--json]

Starts its own redis-server, attaches the full probe set with sampling (probes/sample.c), turns on
the kernel's BPF run-time stats (BPF_ENABLE_STATS, for this process's lifetime only) and runs
redis-benchmark GET/SET at -c 50 and -c 50 -P 16. Reports, per configuration: how often the
cpu-clock program ran and its run time per request, next to all the other probes' run time per
request; how many SAMPLE records it made (busy spans past stall/10 only) and how many stalls they
explained. A timing-free measure: throughput ratios on a shared machine are noise at this size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)

from tracer.engine.bpfstats import close_stats, enable_stats, prog_stats  # noqa: E402
from tracer.kernel.bpf_session import ProbeSession  # noqa: E402
from tracer.kernel.stacks import SamplingConfig  # noqa: E402
from tracer.kernel.target import find_target  # noqa: E402
from tracer.sandbox.redis_server import RedisServer  # noqa: E402

CONFIGS = {"plain": ["-c", "50"], "pipelined": ["-c", "50", "-P", "16"]}


def run(requests: int) -> dict:
    out = {}
    with RedisServer() as server:
        session = ProbeSession([find_target(port=server.port)], sampling=SamplingConfig())
        session.attach()
        stats_fd = enable_stats()
        try:
            for name, args in CONFIGS.items():
                fds = {(n.decode() if isinstance(n, bytes) else n): f.fd for n, f in session.bpf.funcs.items()}
                before = prog_stats(fds)
                samples0, stalls0 = session.profiler.samples, session.profiler.stalls
                started = time.monotonic()
                subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-n", str(requests),
                                "-t", "get,set", "-q", *args], capture_output=True, timeout=600, check=True)
                elapsed = time.monotonic() - started
                session.drain()
                after = prog_stats(fds)
                n = 2 * requests

                def delta(prog, field):
                    return after.get(prog, {}).get(field, 0) - before.get(prog, {}).get(field, 0)
                others = sum(delta(p, "run_time_ns") for p in after if p != "on_cpu_sample")
                out[name] = {
                    "requests": n, "seconds": round(elapsed, 2),
                    "sampler_runs": delta("on_cpu_sample", "run_cnt"),
                    "sampler_ns_per_request": round(delta("on_cpu_sample", "run_time_ns") / n, 4),
                    "other_probes_ns_per_request": round(others / n, 1),
                    "sample_records": session.profiler.samples - samples0,
                    "stalls_explained": session.profiler.stalls - stalls0,
                }
        finally:
            close_stats(stats_fd)
            session.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200_000, help="per test (GET and SET)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args.requests)
    if args.json:
        print(json.dumps(result))
        return 0
    for name, r in result.items():
        print(f"{name:10} {r['requests']} requests in {r['seconds']} s: sampler ran {r['sampler_runs']} times, "
              f"{r['sampler_ns_per_request']} ns/request (all other probes {r['other_probes_ns_per_request']} "
              f"ns/request); {r['sample_records']} SAMPLE records, {r['stalls_explained']} stalls explained")
    return 0


if __name__ == "__main__":
    sys.exit(main())
