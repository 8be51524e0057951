"""What probes/fds.c costs: attach time with and without it, and its run time per openat on the host.

    sudo .venv/bin/python benchmarks/fds_probe_cost.py [--rounds 3] [--opens 100000] [--json] [--quick]

Starts its own redis-server on a free 127.0.0.1 port and attaches a ProbeSession to it in this process,
alternately with the default probes and with the same set minus "fds" (the order flips every round).
For each attach: compile and program-attach time (ProbeSession.times), then the time of an
open+close of /dev/null in this process (not the target: every process on the host pays the
sys_exit_openat program up to its tgid compare), and once, with kernel.bpf_stats_enabled, the
program's own run time per openat (read from /proc/self/fdinfo of the program). Also an untraced
open+close loop per round. --quick: one round, 5,000 opens.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))

from tracer.kernel import bpf_session  # noqa: E402
from tracer.sandbox.redis_server import RedisServer  # noqa: E402
from tracer.kernel.target import find_target  # noqa: E402

OPENAT_PROGRAM = b"tracepoint__syscalls__sys_exit_openat"
STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


def open_close_ns(n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        os.close(os.open("/dev/null", os.O_RDONLY))
    return (time.perf_counter() - started) / n * 1e9


def program_stats(prog_fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded BPF program, counted while bpf_stats_enabled is 1."""
    fields = {}
    with open(f"/proc/self/fdinfo/{prog_fd}") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name.strip()] = value.strip()
    return int(fields.get("run_time_ns", 0)), int(fields.get("run_cnt", 0))


@contextlib.contextmanager
def bpf_stats_enabled():
    """kernel.bpf_stats_enabled on for the block, then as it was; yields False when it cannot be set."""
    try:
        with open(STATS_SYSCTL) as f:
            before_setting = f.read().strip()
        with open(STATS_SYSCTL, "w") as f:
            f.write("1")
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        with open(STATS_SYSCTL, "w") as f:
            f.write(before_setting)


def openat_program_ns(session, n: int) -> float | None:
    with bpf_stats_enabled() as enabled:
        if not enabled:
            return None
        fd = session.bpf.funcs[OPENAT_PROGRAM].fd
        t0, c0 = program_stats(fd)
        open_close_ns(n)
        t1, c1 = program_stats(fd)
    return (t1 - t0) / max(1, c1 - c0)


def _span(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"

    def fmt(v: float) -> str:
        return f"{v:.{digits}f}"

    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--opens", type=int, default=100_000, help="open+close pairs timed per attach")
    ap.add_argument("--quick", action="store_true", help="one round, 5,000 opens")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    rounds, opens = (1, 5_000) if args.quick else (max(1, args.rounds), args.opens)
    with_fds = bpf_session.DEFAULT_PROBES
    variants = {"with fds.c": with_fds, "without": tuple(p for p in with_fds if p != "fds")}
    runs = {name: {"compile_s": [], "probes_ms": [], "open_close_ns": []} for name in variants}
    untraced, program_ns = [], None
    server = RedisServer().start()
    try:
        target = find_target(port=server.port)
        for r in range(rounds):
            order = list(variants.items())
            for name, probes in (order if r % 2 == 0 else order[::-1]):
                session = bpf_session.ProbeSession([target], probes=probes)
                session.attach()
                try:
                    runs[name]["compile_s"].append(session.times.compile_s)
                    runs[name]["probes_ms"].append(session.times.probes_s * 1000)
                    runs[name]["open_close_ns"].append(open_close_ns(opens))
                    if program_ns is None and "fds" in probes:
                        program_ns = openat_program_ns(session, opens)
                finally:
                    session.close()
            untraced.append(open_close_ns(opens))
    finally:
        server.stop()
    result = {"rounds": rounds, "opens": opens, "runs": runs, "untraced_open_close_ns": untraced,
              "sys_exit_openat_ns_per_run": program_ns}
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"{'probes':<12} {'compile s':>18} {'attach ms':>18} {'open+close ns':>22}")
    for name, r in runs.items():
        print(f"{name:<12} {_span(r['compile_s'], 2):>18} {_span(r['probes_ms'], 1):>18} "
              f"{_span(r['open_close_ns']):>22}")
    print(f"{'untraced':<12} {'':>18} {'':>18} {_span(untraced):>22}")
    print("sys_exit_openat BPF run time per openat: "
          + ("unknown (kernel.bpf_stats_enabled not writable)" if program_ns is None else f"{program_ns:.0f} ns"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
