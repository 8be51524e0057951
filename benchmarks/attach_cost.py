"""What each way of attaching costs, from the kernel's own BPF run-time stats (BPF_ENABLE_STATS).

    sudo .venv/bin/python benchmarks/attach_cost.py [--rounds 3] [--requests 50000] [--json]

Starts its own redis-server and, in interleaved rounds, loads one variant at a time and runs
redis-benchmark (GET+SET, -c 50) against it:

* filter-tracepoint:  sys_enter_read/sys_exit_read/sys_enter_write/sys_exit_write syscall
                      tracepoints that only check the tgid (the floor of the current probes);
* filter-raw-syscalls: raw_syscalls sys_enter/sys_exit raw tracepoints that only check the tgid
                      (they fire for every syscall of every process);
* fentry:             fentry/fexit on ksys_read: detected at start-up (EPERM on this VM);
* full:               the full path's probe set (conn+io+loop+fsync, every read/write recorded);
* engine:             the engine's probe set (parsing and histograms in the kernel).

Prints, per variant, the BPF run time per request (all programs, all processes' invocations) with
median and range over the rounds, and the invocations and ns per invocation of each program.
The machine may be shared: other processes' syscalls pass through the same probes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))

from tracer.engine import bpfstats  # noqa: E402
from tracer.sandbox.redis_server import RedisServer  # noqa: E402
from tracer.kernel.target import find_target  # noqa: E402

FILTER_TP = """
static inline int mine(void) { return (bpf_get_current_pid_tgid() >> 32) == TGID; }
TRACEPOINT_PROBE(syscalls, sys_enter_read) { return mine() ? 1 : 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return mine() ? 1 : 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_write) { return mine() ? 1 : 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return mine() ? 1 : 0; }
"""
FILTER_RAW = """
static inline int mine(void) { return (bpf_get_current_pid_tgid() >> 32) == TGID; }
RAW_TRACEPOINT_PROBE(sys_enter) { return mine() ? 1 : 0; }
RAW_TRACEPOINT_PROBE(sys_exit) { return mine() ? 1 : 0; }
"""
FENTRY = """
KFUNC_PROBE(ksys_read) { return 0; }
"""


class Loaded:
    """A loaded variant: its bcc object (or session) and its program fds."""

    def __init__(self, name, bpf, closer):
        self.name = name
        self.bpf = bpf
        self.close = closer

    def prog_fds(self) -> dict:
        return {(k.decode() if isinstance(k, bytes) else k): fn.fd for k, fn in self.bpf.funcs.items()}


def load(name: str, pid: int):
    from bcc import BPF

    if name in ("filter-tracepoint", "filter-raw-syscalls"):
        b = BPF(text=FILTER_TP if name == "filter-tracepoint" else FILTER_RAW, cflags=[f"-DTGID={pid}"])
        return Loaded(name, b, b.cleanup)
    if name == "fentry":
        try:
            b = BPF(text=FENTRY)
        except Exception as err:       # noqa: BLE001 (the kernel's refusal is the result)
            return f"not supported here: {str(err).strip().splitlines()[-1][:120]}"
        return Loaded(name, b, b.cleanup)
    target = find_target(pid=pid)
    if name == "full":
        from tracer.kernel.bpf_session import ProbeSession
        session = ProbeSession([target])
    else:   # the default mode's session, as `diagnose` attaches it (record sample and budget included)
        from tracer.options import TraceOptions
        from tracer.runtime.runner import new_session
        session = new_session(TraceOptions(mode="engine"), [target])
    session.attach()
    loaded = Loaded(name, session.bpf, session.close)
    loaded.session = session
    return loaded


def run_bench(port: int, requests: int) -> None:
    subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-c", "50",
                    "-t", "get,set", "-q"], check=True, capture_output=True, timeout=600)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=50_000, help="per test (GET and SET)")
    ap.add_argument("--variants", default="filter-tracepoint,filter-raw-syscalls,fentry,full,engine")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    per_req = {v: [] for v in variants}
    progs = {v: {} for v in variants}
    notes = {}
    stats_fd = bpfstats.enable_stats()
    if stats_fd is None:
        print("the kernel refused BPF_ENABLE_STATS", file=sys.stderr)
        return 1
    try:
        with RedisServer() as server:
            run_bench(server.port, 5000)
            for r in range(args.rounds):
                order = variants if r % 2 == 0 else list(reversed(variants))
                for v in order:
                    loaded = load(v, server.pid)
                    if isinstance(loaded, str):
                        notes[v] = loaded
                        continue
                    try:
                        before = bpfstats.prog_stats(loaded.prog_fds())
                        run_bench(server.port, args.requests)
                        if hasattr(loaded, "session"):
                            loaded.session.drain()
                        after = bpfstats.prog_stats(loaded.prog_fds())
                    finally:
                        loaded.close()
                    total = 0
                    for prog, st in after.items():
                        b = before.get(prog, {"run_cnt": 0, "run_time_ns": 0})
                        cnt, ns = st["run_cnt"] - b["run_cnt"], st["run_time_ns"] - b["run_time_ns"]
                        total += ns
                        acc = progs[v].setdefault(prog, [0, 0])
                        acc[0] += cnt
                        acc[1] += ns
                    per_req[v].append(total / (2 * args.requests))
                    print(f"round {r + 1} {v:<20} {total / (2 * args.requests):8.0f} ns BPF per request",
                          file=sys.stderr, flush=True)
    finally:
        bpfstats.close_stats(stats_fd)
    out = {}
    for v in variants:
        vals = per_req[v]
        out[v] = {"ns_per_request": {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
                  if vals else None,
                  "programs": {p: {"invocations_per_request": c / (2 * args.requests * len(vals)),
                                   "ns_per_invocation": ns / c if c else 0}
                               for p, (c, ns) in sorted(progs[v].items()) if c} if vals else {},
                  "note": notes.get(v, "")}
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return 0
    print(f"BPF run time per request (GET+SET, redis-benchmark -c 50, {args.rounds} rounds): median (min-max)")
    for v, o in out.items():
        if o["ns_per_request"] is None:
            print(f"  {v:<20} {o['note']}")
            continue
        s = o["ns_per_request"]
        print(f"  {v:<20} {s['median']:7.0f} ns ({s['min']:.0f}-{s['max']:.0f})")
        for p, st in o["programs"].items():
            print(f"      {p:<48} {st['invocations_per_request']:6.2f}/req {st['ns_per_invocation']:6.0f} ns each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
