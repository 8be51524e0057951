"""Helpers of the agent's end-to-end tests: exact-count RESP load, /metrics scrapes, the agent process."""
from __future__ import annotations

import socket
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tracer.sandbox.redis_server import free_port
from tracer_proc import TracerProcess


def resp(*args: str) -> bytes:
    return f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)


def send(port: int, command: tuple, n: int, batch: int = 1) -> int:
    """n single-line-reply commands on one fresh connection, `batch` per write; returns n once all replied."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        frame = resp(*command)
        left = n
        while left:
            k = min(batch, left)
            s.sendall(frame * k)
            got = b""
            while got.count(b"\r\n") < k:
                chunk = s.recv(65536)
                assert chunk, "redis closed the connection"
                got += chunk
            left -= k
    return n


class VictimLoad:
    """One connection sending GETs one at a time (2 ms apart) until stopped: counted exactly; bounded."""

    def __init__(self, port: int, max_n: int = 5000, max_s: float = 20.0):
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(port, max_n, max_s), daemon=True)
        self.thread.start()

    def _run(self, port, max_n, max_s):
        deadline = time.monotonic() + max_s
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            while not self.stop.is_set() and self.sent < max_n and time.monotonic() < deadline:
                s.sendall(resp("GET", "victim"))
                got = b""
                while not got.endswith(b"\r\n"):
                    got += s.recv(64)
                self.sent += 1
                time.sleep(0.002)

    def finish(self) -> int:
        self.stop.set()
        self.thread.join(30)
        return self.sent


def bigkey_del_with_victim(port: int) -> int:
    """DEL big:hash (built beforehand) on a fresh connection while a victim sends GETs: requests sent."""
    load = VictimLoad(port)
    time.sleep(0.3)
    sent = send(port, ("DEL", "big:hash"), 1)
    time.sleep(0.3)
    return sent + load.finish()


def scrape(port: int) -> dict:
    """/metrics as {(sample name, frozenset of labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str = "redis_tracer_requests_total") -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def wait_for(read, want, timeout: float = 20.0, what: str = ""):
    """Polls read() until it returns want; the last value in the failure message."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = read()
        if got == want:
            return got
        time.sleep(0.25)
    raise AssertionError(f"{what or read}: wanted {want!r}, last saw {got!r}")


def start_agent(port: int, *extra: str, env: dict | None = None, prefix: tuple = ()) -> tuple[TracerProcess, int]:
    """The agent on a redis-server's port with /metrics on a free loopback port: (process, metrics port)."""
    metrics_port = free_port()
    proc = TracerProcess("agent", "--port", str(port), "--listen", f"127.0.0.1:{metrics_port}", *extra,
                         env=env, prefix=prefix)
    assert proc.proc.poll() is None, f"the agent exited: {proc.stderr_text()}"
    return proc, metrics_port
