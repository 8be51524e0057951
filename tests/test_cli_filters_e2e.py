"""`trace`'s filters (--min-ms, --command, --client, --key-prefix) in both modes, against a real
redis-server and real clients; with --engine the kernel applies --command (fewer records come up)."""
from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from tracer_proc import REPO, TracerProcess, json_lines

pytestmark = pytest.mark.bpf

MODES = ("--full", "--engine")
SLOW_LUA = "local i=0 while i<4000000 do i=i+1 end return 1"     # tens of ms on the main thread


def resp(*args: str) -> bytes:
    return f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)


class RawClient:
    """One RESP connection whose local port we know (the --client filter's address)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]

    def call(self, *args: str) -> bytes:
        self.sock.sendall(resp(*args))
        data = b""
        while not data.endswith(b"\r\n"):
            data += self.sock.recv(65536)
        return data

    def close(self):
        self.sock.close()


def traced(server, mode, *filters):
    # --min-ms 0 in engine mode: every batch is "slow", so the kernel sends a record for each one it keeps
    extra = ("--min-ms", "0") if mode == "--engine" and "--min-ms" not in filters else ()
    return TracerProcess("trace", "--port", str(server.port), "--json", mode, *extra, *filters)


def workload(server, n=20):
    a, b = RawClient(server.port), RawClient(server.port)
    for i in range(n):
        a.call("SET", f"user:{i}", "v")
        a.call("GET", f"user:{i}")
        b.call("GET", f"item:{i}")
        b.call("HSET", f"item:h{i}", "f", "v")
    a.close()
    b.close()
    return a.addr, b.addr


@pytest.mark.parametrize("mode", MODES)
def test_command_filter(redis_server, mode):
    tracer = traced(redis_server, mode, "--command", "get,hset")
    workload(redis_server)
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    got = json_lines(out)
    assert sorted({r["command"] for r in got}) == ["GET", "HSET"]
    assert sum(r["command"] == "GET" for r in got) == 40 and sum(r["command"] == "HSET" for r in got) == 20
    if mode == "--engine":
        err = tracer.stderr_text()
        assert "trace: --command filtered in the kernel" in err
        # the kernel sent no record for the 20 SETs: only the 60 GET/HSET batches came up
        assert int(re.search(r"traced: (\d+) request records", err).group(1)) == 60, err


@pytest.mark.parametrize("mode", MODES)
def test_key_prefix_filter(redis_server, mode):
    tracer = traced(redis_server, mode, "--key-prefix", "user:")
    a_addr, b_addr = workload(redis_server)
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    got = json_lines(out)
    assert len(got) == 40 and all(r["key"].startswith("user:") for r in got)
    assert {r["client"] for r in got} == {a_addr}


@pytest.mark.parametrize("mode", MODES)
def test_client_port_filter_keeps_one_connection(redis_server, mode):
    a = RawClient(redis_server.port)
    b = RawClient(redis_server.port)
    tracer = traced(redis_server, mode, "--client", a.addr)
    for i in range(10):
        a.call("GET", f"a{i}")
        b.call("GET", f"b{i}")
    a.close()
    b.close()
    rc, out = tracer.stop()
    got = json_lines(out)
    assert rc == 0 and len(got) == 10 and {r["client"] for r in got} == {a.addr}, tracer.stderr_text()
    assert {r["key"] for r in got} == {f"a{i}" for i in range(10)}


@pytest.mark.parametrize("mode", MODES)
def test_min_ms_keeps_only_slow_requests(redis_server, mode):
    tracer = TracerProcess("trace", "--port", str(redis_server.port), "--json", mode, "--min-ms", "10")
    c = RawClient(redis_server.port)
    for i in range(50):
        c.call("GET", f"k{i}")
    c.call("EVAL", SLOW_LUA, "0")
    c.close()
    rc, out = tracer.stop()
    got = json_lines(out)
    assert rc == 0, tracer.stderr_text()
    assert [r["command"] for r in got] == ["EVAL"] and got[0]["latency_us"] >= 10_000


def test_bad_command_list_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "tracer", "trace", "--command", ",,"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("redis-tracer trace: error: argument --command: --command takes")


def test_engine_command_unknown_to_the_kernel_is_filtered_in_user_space(redis_server):
    tracer = traced(redis_server, "--engine", "--command", "GET,NOSUCHCMD")
    workload(redis_server, 10)
    rc, out = tracer.stop()
    err = tracer.stderr_text()
    assert rc == 0 and "trace: --command filtered in user space" in err, err
    got = json_lines(out)
    assert len(got) == 20 and {r["command"] for r in got} == {"GET"}
    # the kernel sent up every batch (--min-ms 0): user space dropped the SETs and HSETs
    assert int(re.search(r"traced: (\d+) request records", err).group(1)) == 40, err
