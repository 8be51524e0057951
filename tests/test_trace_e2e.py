"""`redis-tracer trace` against a real redis-server and real clients: exact counts, sizes, phases."""
from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from tracer_proc import TracerProcess, json_lines

pytestmark = pytest.mark.bpf


def trace(server, *extra):
    return TracerProcess("trace", "--port", str(server.port), "--json", *extra)


def test_concurrent_clients_every_command_traced(redis_server):
    tracer = trace(redis_server)
    n_clients, per_client = 4, 50

    def work(i):
        c = redis_server.client()
        for j in range(per_client):
            if j % 2:
                c.set(f"key:{i}:{j}", "v")
            else:
                c.get(f"key:{i}:{j}")
        c.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    recs = json_lines(out)
    gets = [r for r in recs if r["command"] == "GET" and r["key"].startswith("key:")]
    sets = [r for r in recs if r["command"] == "SET" and r["key"].startswith("key:")]
    assert len(gets) == n_clients * per_client // 2
    assert len(sets) == n_clients * per_client // 2
    assert {r["key"] for r in gets} == {f"key:{i}:{j}" for i in range(n_clients) for j in range(0, per_client, 2)}
    for r in gets + sets:
        assert r["latency_us"] is not None and r["latency_us"] > 0
        assert r["reply_type"] in ("ok", "nil")
        assert r["client"].startswith("127.0.0.1:")
        assert r["exec_source"] == "inferred"
    assert all(r["reply_bytes"] == 5 for r in sets)  # +OK\r\n
    assert all(r["request_bytes"] == len(f"*2\r\n$3\r\nGET\r\n${len(r['key'])}\r\n{r['key']}\r\n") for r in gets)


def test_pipelined_benchmark_commands_all_counted(redis_server):
    # --full: a line per command of a pipelined batch needs every command's bytes (the default engine
    # mode sends one record per batch, naming its first command; its counts: test_engine_modes_e2e.py)
    tracer = trace(redis_server, "--full")
    n = 2000
    subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(redis_server.port), "-n", str(n), "-c", "4",
                    "-P", "16", "-t", "set,get", "-q"], check=True, capture_output=True, timeout=120)
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    recs = json_lines(out)
    assert sum(1 for r in recs if r["command"] == "SET") == n
    assert sum(1 for r in recs if r["command"] == "GET") == n
    assert max(r["batch"] for r in recs if r["command"] == "GET") > 1


def test_io_threads_reads(redis_factory):
    server = redis_factory(io_threads=2, io_threads_do_reads="yes")
    tracer = trace(server)
    n = 2000
    subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-n", str(n), "-c", "8",
                    "-t", "get", "-q"], check=True, capture_output=True, timeout=120)
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    recs = json_lines(out)
    assert sum(1 for r in recs if r["command"] == "GET") == n


def test_the_largest_capture_allowed_loads_and_captures(redis_server):
    # --capture-bytes 16384 used to be accepted and then failed to load the probes (the per-CPU
    # scratch record outgrew a map value's 32 KiB)
    from tracer.options import CAPTURE_MAX

    # --full: a 6000-byte key is shown only from the full capture (the engine keeps <= 64 bytes)
    tracer = trace(redis_server, "--full", "--capture-bytes", str(CAPTURE_MAX))
    c = redis_server.client()
    c.set("k" * 6000, "v")
    c.close()
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    (req,) = [r for r in json_lines(out) if r["command"] == "SET"]
    assert req["key"].startswith("kkkk") and req["request_bytes"] == len(b"*3\r\n$3\r\nSET\r\n$6000\r\n") + 6002 + 7


def test_big_value_sizes_are_exact(redis_server):
    tracer = trace(redis_server)
    value = b"x" * (5 * 1024 * 1024)
    c = redis_server.client()
    c.set("big", value)
    assert c.get("big") == value
    c.close()
    rc, out = tracer.stop()
    recs = json_lines(out)
    (set_req,) = [r for r in recs if r["command"] == "SET" and r["key"] == "big"]
    (get_req,) = [r for r in recs if r["command"] == "GET" and r["key"] == "big"]
    assert set_req["request_bytes"] == len(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$5242880\r\n") + len(value) + 2
    assert get_req["reply_bytes"] == len(b"$5242880\r\n") + len(value) + 2
    assert set_req["reply_bytes"] == 5


def test_command_split_across_tcp_writes_is_one_request(redis_server):
    # --full: the key of a command split across reads is read from its bytes (the engine captures a key
    # only from the read where its command began; its counts of split frames: test_engine_e2e.py)
    tracer = trace(redis_server, "--full")
    frame = b"*3\r\n$3\r\nSET\r\n$5\r\nsplit\r\n$5\r\nvalue\r\n"
    with socket.create_connection(("127.0.0.1", redis_server.port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(frame), 7):
            s.sendall(frame[i:i + 7])
            time.sleep(0.05)
        assert s.recv(100) == b"+OK\r\n"
    rc, out = tracer.stop()
    recs = [r for r in json_lines(out) if r["key"] == "split"]
    assert len(recs) == 1
    assert recs[0]["command"] == "SET" and recs[0]["request_bytes"] == len(frame)
    # the request began when its first bytes arrived, not at the last read
    gaps = (len(frame) + 6) // 7 - 1
    assert recs[0]["latency_us"] >= gaps * 50_000


def test_latency_within_client_round_trip_and_debug_sleep(redis_factory):
    redis_server = redis_factory(enable_debug_command="yes")
    tracer = trace(redis_server)
    c = redis_server.client()
    c.ping()
    rtts = {}
    for i in range(30):
        t0 = time.perf_counter()
        c.get(f"rtt:{i}")
        rtts[f"rtt:{i}"] = (time.perf_counter() - t0) * 1e6
    t0 = time.perf_counter()
    c.execute_command("DEBUG", "SLEEP", "0.2")
    sleep_rtt = (time.perf_counter() - t0) * 1e6
    c.close()
    rc, out = tracer.stop()
    recs = json_lines(out)
    for r in recs:
        if r["command"] == "GET" and r["key"] in rtts:
            assert r["latency_us"] <= rtts[r["key"]], r
    (dbg,) = [r for r in recs if r["command"] == "DEBUG SLEEP"]
    assert 190_000 <= dbg["phases_us"]["exec"] <= 260_000
    assert dbg["latency_us"] <= sleep_rtt
