"""Stalls on a real redis-server, with ground truth measured by the test's own clients."""
from __future__ import annotations

import subprocess
import threading
import time

import pytest

from tracer_proc import TracerProcess, report_of

pytestmark = pytest.mark.bpf


class GetLoad:
    """n clients sending GETs back to back, each recording its slowest round trip; bounded in time."""

    def __init__(self, server, n=10, max_s=30.0):
        self.stop = threading.Event()
        self.worst_ms = [0.0] * n
        self.count = [0] * n
        self.threads = [threading.Thread(target=self._run, args=(server, i, max_s), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, server, i, max_s):
        c = server.client()
        deadline = time.monotonic() + max_s
        while not self.stop.is_set() and time.monotonic() < deadline and self.count[i] < 200_000:
            t0 = time.perf_counter()
            c.get(f"victim:{i}")
            self.worst_ms[i] = max(self.worst_ms[i], (time.perf_counter() - t0) * 1000)
            self.count[i] += 1
            time.sleep(0.002)
        c.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def build_hash(client, key, fields):
    pipe = client.pipeline(transaction=False)
    batch = 1000
    for start in range(0, fields, batch):
        mapping = {f"f{j}": "v" for j in range(start, min(fields, start + batch))}
        pipe.hset(key, mapping=mapping)
        if (start // batch) % 50 == 49:
            pipe.execute()
    pipe.execute()
    assert client.hlen(key) == fields


def bigkey_del_under_load(server, trace, *tracer_args):
    """A 1M-field hash DELeted while 10 clients send GETs, recorded: (report, the DEL's RTT in ms, load)."""
    c = server.client(socket_timeout=60)
    build_hash(c, "big:hash", 1_000_000)
    tracer = TracerProcess("record", *tracer_args, "--port", str(server.port), "-o", str(trace))
    load = GetLoad(server, n=10)
    time.sleep(1.0)
    t0 = time.perf_counter()
    c.delete("big:hash")
    del_rtt_ms = (time.perf_counter() - t0) * 1000
    time.sleep(1.0)
    load.finish()
    c.close()
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    return report_of(trace), del_rtt_ms, load


def test_bigkey_del_culprit_and_victims(redis_server, tmp_path):
    report, del_rtt_ms, load = bigkey_del_under_load(redis_server, tmp_path / "del.rtrace")
    stall = report["stalls"][0]
    assert stall["command"] == "DEL" and stall["key"] == "big:hash" and stall["class"] == "bigkey"
    assert abs(stall["duration_ms"] - del_rtt_ms) <= 0.2 * del_rtt_ms, (stall, del_rtt_ms)
    assert stall["victims"] >= 1
    worst_observed = max(load.worst_ms)
    assert 0.5 * worst_observed <= stall["victim_added_ms"] <= worst_observed + 1, (stall, load.worst_ms)
    assert any("UNLINK" in a or "lazyfree" in a for a in stall["advice"])


def test_slow_lua_script_is_a_lua_stall(redis_server, tmp_path):
    trace = tmp_path / "lua.rtrace"
    tracer = TracerProcess("record", "--port", str(redis_server.port), "-o", str(trace))
    load = GetLoad(redis_server, n=3)
    time.sleep(0.5)
    c = redis_server.client()
    script = "local t = redis.call('TIME'); local s = t[1]*1000000 + t[2]; " \
             "while true do local n = redis.call('TIME'); if n[1]*1000000 + n[2] - s > 300000 then break end end; return 1"
    t0 = time.perf_counter()
    c.eval(script, 0)
    rtt_ms = (time.perf_counter() - t0) * 1000
    time.sleep(0.5)
    load.finish()
    rc, _ = tracer.stop()
    report = report_of(trace)
    stall = report["stalls"][0]
    assert stall["command"] == "EVAL" and stall["class"] == "lua"
    # the busy span also holds the rest of its loop iteration (the other clients' requests, the replies
    # written after EVAL's): on a loaded machine that took 7 ms, so the bound is the stall standard's
    # 20 % of the client's round trip, not 1 ms
    assert 280 <= stall["duration_ms"] <= rtt_ms * 1.2


@pytest.mark.parametrize("mode", ["always", "everysec"])
def test_aof_fsync_thread_attribution(redis_factory, tmp_path, mode):
    server = redis_factory(appendonly="yes", appendfsync=mode)
    trace = tmp_path / f"aof-{mode}.rtrace"
    tracer = TracerProcess("record", "--port", str(server.port), "-o", str(trace))
    c = server.client()
    for i in range(300):
        c.set(f"a:{i}", i)
        if mode == "everysec" and i % 100 == 99:
            time.sleep(1.1)
    rc, _ = tracer.stop()
    report = report_of(trace)
    fs = report["fsync"]
    assert fs["count"] > 0
    if mode == "always":
        assert fs["main_thread"] >= 300 * 0.9  # one per write batch on the main thread
    else:
        assert fs["main_thread"] == 0  # the bio thread syncs


def test_normal_traffic_has_no_stalls(redis_server, tmp_path):
    trace = tmp_path / "calm.rtrace"
    tracer = TracerProcess("record", "--port", str(redis_server.port), "-o", str(trace))
    subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(redis_server.port), "-n", "20000", "-c", "10",
                    "-t", "set,get,lpush,hset", "-q"], check=True, capture_output=True, timeout=120)
    rc, _ = tracer.stop()
    report = report_of(trace)
    assert report["requests"] >= 20000
    assert report["stalls"] == []


def test_stall_in_first_loop_iteration_after_attach(redis_factory, tmp_path):
    # hz 1: the main thread sleeps in epoll_wait across the attach, so the wake-up that carries
    # our command is the first one the probes see (its epoll entry was never seen).
    server = redis_factory(hz=1, enable_debug_command="yes")
    c = server.client()
    c.ping()
    trace = tmp_path / "first.rtrace"
    tracer = TracerProcess("record", "--port", str(server.port), "-o", str(trace))
    c.execute_command("DEBUG", "SLEEP", "0.2")
    c.close()
    rc, _ = tracer.stop()
    stalls = report_of(trace)["stalls"]
    assert stalls and stalls[0]["command"] == "DEBUG SLEEP"
    assert 190 <= stalls[0]["duration_ms"] <= 300
