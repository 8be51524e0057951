"""On-CPU samples (on unless --no-why) on a real redis-server: stalls explained by what the main thread
ran on the CPU (probes/sample.c, kernel/unwind.py, analyze/oncpu.py), with ground truth from the test's clients."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tracer_proc import REPO, TracerProcess, report_of

pytestmark = pytest.mark.bpf


class SlowestGet:
    """One client GETting a key every 2 ms (bounded in count and time), keeping its slowest round trip."""

    def __init__(self, server, key="k", max_s=20.0):
        self.worst_ms = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(server, key, max_s), daemon=True)
        self.thread.start()

    def _run(self, server, key, max_s):
        c = server.client(socket_timeout=30)
        deadline = time.monotonic() + max_s
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline and n < 20_000:
            t0 = time.perf_counter()
            c.get(key)
            self.worst_ms = max(self.worst_ms, (time.perf_counter() - t0) * 1000)
            n += 1
            time.sleep(0.002)
        c.close()

    def finish(self):
        self.stop.set()
        self.thread.join(10)


def build_hash(client, key, fields):
    pipe = client.pipeline(transaction=False)
    for start in range(0, fields, 1000):
        pipe.hset(key, mapping={f"f{j}": "v" for j in range(start, min(fields, start + 1000))})
        if start % 50_000 == 49_000:
            pipe.execute()
    pipe.execute()
    assert client.hlen(key) == fields


def expire_and_wait(client, key, ms, keys_left):
    """PEXPIRE key, then wait (bounded) until active expiry has removed it."""
    client.pexpire(key, ms)
    deadline = time.monotonic() + 10
    # DBSIZE, not EXISTS: touching the key would expire it on access, inside EXISTS
    while client.dbsize() > keys_left and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.dbsize() == keys_left


def record(server, trace, action, settle_s=1.0, *args):
    """Record (on-CPU samples are on by default) around action(); the report of the trace."""
    tracer = TracerProcess("record", *args, "--port", str(server.port), "-o", str(trace))
    time.sleep(0.5)
    action()
    time.sleep(settle_s)
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    return report_of(trace)


def all_frames(stall) -> set:
    return {f for p in stall.get("frames") or [] for f in p["frames"]} | \
        {f for line in stall.get("folded") or [] for f in line.rpartition(" ")[0].split(";")}


def test_big_key_expiry_is_class_expiry_and_the_get_is_no_culprit(redis_factory, tmp_path):
    server = redis_factory(lazyfree_lazy_expire="no", hz="10")
    c = server.client(socket_timeout=60)
    build_hash(c, "big", 600_000)
    c.set("k", "v")
    load = SlowestGet(server)

    report = record(server, tmp_path / "expiry.rtrace", lambda: expire_and_wait(c, "big", 300, keys_left=1))
    load.finish()
    stalls = [s for s in report["stalls"] if s["duration_ms"] >= 100]
    assert stalls, report["stalls"]
    stall = stalls[0]
    assert stall["class"] == "expiry", stall
    assert "activeExpireCycle" in all_frames(stall), stall["frames"]
    assert stall["command"] != "GET" and not any(cu["command"] == "GET" for cu in stall["culprits"]), stall
    assert abs(stall["duration_ms"] - load.worst_ms) <= 0.2 * load.worst_ms, (stall["duration_ms"], load.worst_ms)
    assert any("not visible" in e for e in stall["evidence"]), stall["evidence"]
    assert stall["samples"] >= 10


def test_eviction_of_a_big_key_is_class_eviction(redis_factory, tmp_path):
    server = redis_factory(maxmemory_policy="allkeys-random", lazyfree_lazy_eviction="no")
    c = server.client(socket_timeout=60)
    build_hash(c, "big", 600_000)
    used = int(c.info("memory")["used_memory"])
    c.config_set("maxmemory", str(used + 2_000_000))

    def insert():
        c.set("filler", "x" * 4_000_000)   # over maxmemory: the only other key, big, is evicted
        assert not c.exists("big")
    report = record(server, tmp_path / "evict.rtrace", insert)
    stalls = [s for s in report["stalls"] if s["duration_ms"] >= 50]
    assert stalls, report["stalls"]
    assert stalls[0]["class"] == "eviction", stalls[0]
    assert "performEvictions" in all_frames(stalls[0])


def test_bigkey_del_frames_show_the_del_path_and_export_folded(redis_server, tmp_path):
    c = redis_server.client(socket_timeout=60)
    build_hash(c, "big:hash", 600_000)
    trace = tmp_path / "del.rtrace"
    report = record(redis_server, trace, lambda: c.delete("big:hash"))
    stall = report["stalls"][0]
    assert stall["class"] == "bigkey" and stall["command"] == "DEL", stall
    frames = all_frames(stall)
    assert {"delGenericCommand", "dictRelease"} <= frames, stall["frames"]
    assert stall["frames"][0]["share"] >= 0.5 and stall["frames"][0]["frames"][0] == "delGenericCommand"
    out = tmp_path / "del.folded"
    proc = subprocess.run([sys.executable, "-m", "tracer", "export", str(trace), "--format", "folded", "-o", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert lines
    total = 0
    for line in lines:      # flamegraph.pl's grammar: frames joined by ';', one space, a count
        stack, sep, count = line.rpartition(" ")
        assert sep and count.isdigit() and stack and " " not in stack, line
        assert stack.startswith("stall_at_+")
        total += int(count)
    assert total == sum(int(x.rpartition(" ")[2]) for x in stall["folded"])
    assert any("delGenericCommand;" in line for line in lines)


def test_an_expired_big_key_is_named_from_the_replication_stream(redis_factory, tmp_path):
    master = redis_factory(lazyfree_lazy_expire="no")
    replica = redis_factory(replicaof=f"127.0.0.1 {master.port}")
    c = master.client(socket_timeout=60)
    build_hash(c, "big:expiring", 300_000)
    r = replica.client(socket_timeout=10)
    deadline = time.monotonic() + 15
    while r.info("replication").get("master_link_status") != "up" or r.dbsize() < 1:
        assert time.monotonic() < deadline, r.info("replication")
        time.sleep(0.1)

    def expire():
        time.sleep(1.2)     # the link is told from a client by the replica's REPLCONF ACK, sent every second
        expire_and_wait(c, "big:expiring", 200, keys_left=0)
    report = record(master, tmp_path / "replica.rtrace", expire)
    stalls = [s for s in report["stalls"] if s["class"] == "expiry"]
    assert stalls, report["stalls"]
    assert "expired key: 'big:expiring' (the DEL Redis sent its replicas)" in stalls[0]["evidence"], stalls[0]


def test_without_perf_events_tracing_goes_on_without_samples(redis_server, monkeypatch):
    from tracer.kernel import events, stacks
    from tracer.kernel.bpf_session import ProbeSession
    from tracer.kernel.target import find_target

    def refused(self, bpf, pids):
        raise OSError("perf_event_open: Permission denied")
    monkeypatch.setattr(stacks.StackProfiler, "attach", refused)
    notes = []
    session = ProbeSession([find_target(port=redis_server.port)], sampling=stacks.SamplingConfig())
    try:
        session.attach(progress=notes.append)
        assert session.profiler is None and " why " not in session.describe()
        assert notes == ["no on-CPU samples (perf_event_open: Permission denied); stalls are explained"
                         " without them"]
        c = redis_server.client()
        c.set("k", "v")
        assert c.get("k") == b"v"
        time.sleep(0.3)
        assert any(raw[events.KIND_BYTE] == events.READ for raw in session.drain())   # traced all the same
    finally:
        session.close()


def test_engine_mode_stalls_get_their_frames_too(redis_server, tmp_path):
    c = redis_server.client(socket_timeout=60)
    build_hash(c, "big:hash", 400_000)
    report = record(redis_server, tmp_path / "engine.rtrace", lambda: c.delete("big:hash"), 1.0, "--engine")
    assert report["mode"] == "engine"
    stall = report["stalls"][0]
    assert stall["class"] == "bigkey" and stall["command"] == "DEL", stall
    assert stall["frames"][0]["frames"][0] == "delGenericCommand" and stall["samples"] >= 10, stall["frames"]
