"""The first probe end to end: attach to a real redis-server, count its syscalls exactly."""
from __future__ import annotations

import json
import socket

import pytest

from tracer_proc import TracerProcess

pytestmark = pytest.mark.bpf


def test_counts_match_what_the_client_did(redis_server):
    tracer = TracerProcess("count", "--port", str(redis_server.port), "--json")
    n = 25
    with socket.create_connection(("127.0.0.1", redis_server.port)) as s:
        for i in range(n):
            s.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nk%03d\r\n$1\r\nv\r\n" % i)
            assert s.recv(64) == b"+OK\r\n"
    # redis-py for good measure: its own handshake adds commands, so count from INFO.
    c = redis_server.client()
    before = int(c.info("stats")["total_commands_processed"])
    for i in range(10):
        c.get(f"k{i:03d}")
    c.close()
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    counts = json.loads(out)["counts"]
    accepts = counts.get("accept", 0) + counts.get("accept4", 0)
    assert accepts == 2
    # raw client: n request reads + 1 read of 0 bytes (client closed); redis-py: >= its 10 GETs + 1 EOF
    assert counts["read"] >= n + 1 + 10 + 1
    assert counts["write"] + counts.get("writev", 0) >= n + 10
    assert counts["close"] == 2
    assert json.loads(out)["lost"] == 0
    assert before >= n


def test_exact_counts_with_raw_client_only(redis_server):
    tracer = TracerProcess("count", "--port", str(redis_server.port), "--json")
    n = 40
    with socket.create_connection(("127.0.0.1", redis_server.port)) as s:
        for i in range(n):
            s.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n")
            assert s.recv(64) == b"$-1\r\n"
    rc, out = tracer.stop()
    counts = json.loads(out)["counts"]
    assert counts.get("accept", 0) + counts.get("accept4", 0) == 1
    assert counts["read"] == n + 1
    assert counts["write"] == n
    assert counts["close"] == 1
