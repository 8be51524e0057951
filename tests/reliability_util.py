"""Helpers of the reliability tests: raw RESP clients, the CLI as a subprocess, bounded load."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

from eventstream import cmd
from tracer_proc import REPO

HOST = "127.0.0.1"


resp = cmd  # one RESP command encoder for every test helper (tests/eventstream.py)


def read_some(sock: socket.socket, quiet_s: float = 0.15, limit_s: float = 5.0) -> bytes:
    """Whatever the server sends until it has been quiet for quiet_s (bounded by limit_s)."""
    data = b""
    deadline = time.monotonic() + limit_s
    sock.settimeout(quiet_s)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            if data:
                break
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        # a reply that ends a line is probably whole: wait only briefly for more
        sock.settimeout(0.02 if data.endswith(b"\r\n") else quiet_s)
    return data


def call(sock: socket.socket, *args) -> bytes:
    sock.sendall(resp(*args))
    return read_some(sock)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def cli(*args, timeout: float = 300, input_bytes: bytes | None = None) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it; stdout and stderr as bytes (every byte is checked)."""
    return subprocess.run([sys.executable, "-m", "tracer", *args], cwd=REPO, capture_output=True,
                          timeout=timeout, input=input_bytes)


class Load:
    """Pipelined SET/GET on one connection in a thread: bounded in count and time."""

    def __init__(self, port: int, max_requests: int = 200_000, max_seconds: float = 30.0, value: bytes = b"v" * 32,
                 pipeline: int = 50):
        self.port, self.max_requests, self.max_seconds = port, max_requests, max_seconds
        self.value, self.pipeline = value, pipeline
        self.sent = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Load":
        self._thread.start()
        return self

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        try:
            s = connect(self.port)
            s.settimeout(10)
            i = 0
            while not self._stop.is_set() and self.sent < self.max_requests and time.monotonic() < deadline:
                batch = b"".join(resp("SET", f"load:{(i + j) % 10000}", self.value) for j in range(self.pipeline))
                s.sendall(batch)
                want = self.pipeline * 5     # +OK\r\n each
                got = 0
                while got < want:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("server closed")
                    got += len(chunk)
                i += self.pipeline
                self.sent += self.pipeline
            s.close()
        except OSError:
            self.errors += 1

    def stop(self, timeout: float = 30.0) -> int:
        self._stop.set()
        self._thread.join(timeout)
        return self.sent
