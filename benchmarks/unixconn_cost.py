"""What probes/unixconn.c costs other processes: connect() of a unix socket, traced with and without it.

    sudo .venv/bin/python benchmarks/unixconn_cost.py [--rounds 3] [--connects 20000]

Starts its own redis-server with a unix socket and attaches a ProbeSession to it in this process,
alternately with unixconn.c (a target with a unix socket) and without it (the order flips every
round); in each, times connect+close of a unix socket of *another* listener in this process (every
process on the host pays sys_enter_connect's path lookup and sk_data_ready's thread lookup), and
once, with kernel.bpf_stats_enabled, the run time per call of the three programs unixconn.c adds
or extends. Also an untraced loop per round.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))
sys.path.insert(0, HERE)

from fds_probe_cost import _span, bpf_stats_enabled, program_stats  # noqa: E402
from tracer.kernel import bpf_session  # noqa: E402
from tracer.kernel.target import find_target  # noqa: E402
from tracer.sandbox.redis_server import RedisServer  # noqa: E402

PROGRAMS = (b"tracepoint__syscalls__sys_enter_connect", b"tracepoint__syscalls__sys_exit_connect",
            b"tracepoint__sock__sk_data_ready")


def other_listener(path: str) -> socket.socket:
    """A unix listener that accepts and closes in a thread: the connects measured are not the target's."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4096)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def connect_close_ns(path: str, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
    return (time.perf_counter() - started) / n * 1e9


def programs_ns(session, path: str, n: int) -> dict:
    """BPF run time per call of each program, over n connects (empty when bpf_stats cannot be turned on)."""
    with bpf_stats_enabled() as enabled:
        if not enabled:
            return {}
        fds = {name.decode(): session.bpf.funcs[name].fd for name in PROGRAMS if name in session.bpf.funcs}
        before = {name: program_stats(fd) for name, fd in fds.items()}
        connect_close_ns(path, n)
        after = {name: program_stats(fd) for name, fd in fds.items()}
    return {name: (after[name][0] - before[name][0]) / max(1, after[name][1] - before[name][1]) for name in fds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connects", type=int, default=20_000, help="connect+close pairs timed per attach")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="unixconn-cost-")
    listener = other_listener(os.path.join(tmp, "other.sock"))
    server = RedisServer(unixsocket=os.path.join(tmp, "redis.sock")).start()
    runs = {"with unixconn.c": [], "without": []}
    untraced, per_program = [], {}
    try:
        target = find_target(port=server.port)
        path = listener.getsockname()
        for r in range(max(1, args.rounds)):
            order = [("with unixconn.c", target.unix_socket), ("without", None)]
            for name, sock in (order if r % 2 == 0 else order[::-1]):
                target.unix_socket = sock
                session = bpf_session.ProbeSession([target])
                session.attach()
                try:
                    runs[name].append(connect_close_ns(path, args.connects))
                    if sock and not per_program:
                        per_program = programs_ns(session, path, args.connects)
                finally:
                    session.close()
            untraced.append(connect_close_ns(path, args.connects))
    finally:
        server.stop()
        listener.close()
    print(f"{'probes':<16} {'connect+close ns':>24}")
    for name, values in runs.items():
        print(f"{name:<16} {_span(values):>24}")
    print(f"{'untraced':<16} {_span(untraced):>24}")
    for name, ns in per_program.items():
        print(f"{name}: {ns:.0f} ns per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
