"""How long attaching takes against the number of connections Redis already holds (issue 19).

    sudo .venv/bin/python benchmarks/attach_scaling.py [--connections 0,1000,5000,10000] [--rounds 2]
                                                       [--json] [--quick] [--repo DIR]

Starts its own redis-server on a free 127.0.0.1 port (maxclients above the largest count), opens
the loopback connections itself (RLIMIT_NOFILE raised for it and inherited by redis-server), then
for each count and round runs `redis-tracer trace --json --port P` as a subprocess and measures:

* attach: from starting the tracer to its `attached:` line (wall), with the tracer's own split
  (probe compile, fd discovery, program attach; the rest is Python start-up and target discovery);
* exactness: right after `attached:` it sends PINGs on connections that are older than the tracer
  and on a new one, stops the tracer with SIGINT and counts the PINGs it printed (must be all).

Counts run ascending in odd rounds and descending in even ones, so drift on a shared machine hits
every count. --quick is the CI smoke (0 and 200 connections, one round). --repo runs the tracer of
another checkout (its .venv if it has one), for before/after figures.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, ROOT)

from tracer.errors import TracerError  # noqa: E402
from tracer.redis_server import RedisServer, raise_open_files_limit  # noqa: E402

PING = b"*1\r\n$4\r\nPING\r\n"
PINGS_OLD = 100   # on connections older than the tracer, one each
PINGS_NEW = 100   # on a connection made after `attached:`
SPLIT = re.compile(r"\((\d+) fds classified in ([\d.]+) s, probes compiled in ([\d.]+) s and attached in ([\d.]+) s\)")


def _ping(sock: socket.socket) -> None:
    sock.sendall(PING)
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        reply += chunk


class Pool:
    """Loopback connections held open to the server, grown or shrunk to a count."""

    def __init__(self, port: int):
        self.port = port
        self.conns: list[socket.socket] = []
        self.control = socket.create_connection(("127.0.0.1", port), timeout=10)

    def connected_clients(self) -> int:
        self.control.sendall(b"*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n")
        data = b""
        while b"connected_clients:" not in data or not data.endswith(b"\r\n"):
            data += self.control.recv(65536)
        return int(re.search(rb"connected_clients:(\d+)", data).group(1))

    def resize(self, n: int) -> None:
        while len(self.conns) > n:
            self.conns.pop().close()
        while len(self.conns) < n:
            self.conns.append(socket.create_connection(("127.0.0.1", self.port), timeout=10))
        deadline = time.monotonic() + 60
        while self.connected_clients() != n + 1:
            if time.monotonic() > deadline:
                raise SystemExit(f"redis-server does not report {n + 1} clients")
            time.sleep(0.05)

    def close(self) -> None:
        for sock in self.conns:
            sock.close()
        self.control.close()


def tracer_python(repo: str) -> str:
    venv = os.path.join(repo, ".venv", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def one_run(repo: str, port: int, pool: Pool, timeout: float) -> dict:
    started = time.monotonic()
    proc = subprocess.Popen([tracer_python(repo), "-m", "tracer", "trace", "--json", "--port", str(port)],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    attached = threading.Event()
    err: list[str] = []

    def read_err():
        for line in proc.stderr:
            err.append(line)
            if line.startswith("attached:"):
                attached.set()
        attached.set()

    threading.Thread(target=read_err, daemon=True).start()
    if not attached.wait(timeout) or proc.poll() is not None:
        proc.kill()
        proc.wait()
        return {"attach_s": None, "timed_out": True, "stderr": "".join(err)[-500:]}
    attach_s = time.monotonic() - started
    step = max(1, len(pool.conns) // PINGS_OLD)
    old = pool.conns[::step][:PINGS_OLD]
    for sock in old:
        _ping(sock)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as fresh:
        for _ in range(PINGS_NEW):
            _ping(fresh)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    pings = sum(1 for line in out if line.strip() and json.loads(line).get("command") == "PING")
    line = next((e for e in err if e.startswith("attached:")), "")
    split = SPLIT.search(line)
    lost = re.search(r"(\d+) lost events", "".join(err))
    return {"attach_s": round(attach_s, 3), "timed_out": False,
            "fds": int(split.group(1)) if split else None,
            "scan_s": float(split.group(2)) if split else None,
            "compile_s": float(split.group(3)) if split else None,
            "probes_s": float(split.group(4)) if split else None,
            "pings_sent": len(old) + PINGS_NEW, "pings_traced": pings,
            "lost_events": int(lost.group(1)) if lost else None}


def _median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", default="0,1000,5000,10000",
                    help="comma-separated counts of open connections (default 0,1000,5000,10000)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0, help="give up on an attach after this many s")
    ap.add_argument("--repo", default=ROOT, help="checkout whose tracer is run (default: this one)")
    ap.add_argument("--quick", action="store_true", help="0 and 200 connections, one round (CI smoke)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    counts = [0, 200] if args.quick else [int(c) for c in args.connections.split(",") if c.strip()]
    rounds = 1 if args.quick else max(1, args.rounds)
    try:
        raise_open_files_limit(max(counts) + 1_000)   # our ends; redis-server inherits the limit
    except TracerError as err:
        raise SystemExit(f"attach_scaling: {err.line()}") from None

    runs: dict[int, list[dict]] = {n: [] for n in counts}
    server = RedisServer(maxclients=max(counts) + 100).start()
    pool = Pool(server.port)
    try:
        for r in range(rounds):
            for n in (counts if r % 2 == 0 else counts[::-1]):
                pool.resize(n)
                run = one_run(os.path.abspath(args.repo), server.port, pool, args.timeout)
                runs[n].append(run)
                if not args.json:
                    print(f"  round {r + 1}, {n:>6} connections: attach {run['attach_s']} s, "
                          f"{run.get('pings_traced')}/{run.get('pings_sent')} PINGs traced", file=sys.stderr)
    finally:
        pool.close()
        server.stop()

    table = []
    for n in counts:
        rs = runs[n]
        attach = [r["attach_s"] for r in rs if r["attach_s"] is not None]
        table.append({"connections": n, "runs": len(rs), "timed_out": sum(r["timed_out"] for r in rs),
                      "attach_s_median": _median(rs, "attach_s"),
                      "attach_s_min": min(attach) if attach else None,
                      "attach_s_max": max(attach) if attach else None,
                      "compile_s": _median(rs, "compile_s"), "scan_s": _median(rs, "scan_s"),
                      "probes_s": _median(rs, "probes_s"), "fds": _median(rs, "fds"),
                      "pings_sent": sum(r.get("pings_sent", 0) for r in rs),
                      "pings_traced": sum(r.get("pings_traced", 0) for r in rs),
                      "lost_events": sum(r.get("lost_events") or 0 for r in rs)})
    result = {"repo": os.path.abspath(args.repo), "rounds": rounds, "counts": table, "runs": runs}
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"{'connections':>11} {'attach s (median, min-max)':>28} {'compile s':>9} {'fd scan s':>9} "
          f"{'attach s':>8} {'PINGs traced':>13} {'lost':>5}")
    def cell(value) -> str:
        return "-" if value is None else str(value)

    for row in table:
        span = (f"{row['attach_s_median']} ({row['attach_s_min']}-{row['attach_s_max']})"
                if row["attach_s_median"] is not None else "timed out")
        print(f"{row['connections']:>11} {span:>28} {cell(row['compile_s']):>9} {cell(row['scan_s']):>9} "
              f"{cell(row['probes_s']):>8} {row['pings_traced']:>6}/{row['pings_sent']:<6} {row['lost_events']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
