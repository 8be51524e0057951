"""Cache patterns on a real redis-server with real redis-py clients, recorded by the tracer and read back
with `report` (the same pipeline live and diagnose use). One recording holds every scenario, each under
its own key prefix; each test checks one pattern against the ground truth the clients saw."""
from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time

import pytest

from tracer.sandbox.cache_trouble import inventory_race, stampede
from tracer.sandbox.redis_server import RedisServer
from tracer_proc import REPO, TracerProcess, report_of

pytestmark = pytest.mark.bpf

STAMPEDE_CLIENTS = 8
RACE_ROUNDS = 20
PENETRATION_MISSES = 300
AVALANCHE_KEYS = 60
HOT_READS = 2000
BIG_VALUE_BYTES = 200_000
BIG_READS = 30
TRACKING_ROUNDS = 25


def penetration(c) -> int:
    """Random user IDs that exist nowhere, asked at a steady ~200/s for 1.5 s; returns the misses."""
    rng = random.Random(7)
    misses = 0
    for _ in range(PENETRATION_MISSES):
        misses += c.get(f"e2e:user:{rng.randrange(10**12)}") is None
        time.sleep(0.005)
    return misses


def avalanche(c) -> int:
    """Keys written in one batch with the same 1 s TTL, then read until they are gone; returns how many
    went missing in the same read batch."""
    keys = [f"e2e:sku:{i}" for i in range(AVALANCHE_KEYS)]
    pipe = c.pipeline(transaction=False)
    for k in keys:
        pipe.set(k, "price", px=1000)
    pipe.execute()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pipe = c.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        gone = sum(v is None for v in pipe.execute())
        if gone:
            return gone
        time.sleep(0.1)
    return 0


class RawClient:
    """A client on a plain socket that sees every frame Redis sends it, pushes included."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")

    def send(self, *args: str):
        self.sock.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args))

    def frame(self):
        """One RESP2/RESP3 frame: aggregates as (type byte, [elements]), scalars as bytes."""
        line = self.file.readline()[:-2]
        t, rest = line[:1], line[1:]
        if t in b"$=!":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2]
        if t in b"*>~%":
            n = int(rest)
            return None if n < 0 else (t, [self.frame() for _ in range(n * 2 if t == b"%" else n)])
        return rest

    def call(self, *args: str):
        self.send(*args)
        return self.frame()

    def close(self):
        self.file.close()
        self.sock.close()


def tracking(port: int, key: str, writer) -> int:
    """One RESP3 client caches `key` (CLIENT TRACKING on, same connection) and one RESP2 client through
    a redirect connection subscribed to __redis__:invalidate; each round both read the key, another
    client writes it, and each waits for its invalidation. Returns the invalidations the two received."""
    resp3, resp2, redirect = RawClient(port), RawClient(port), RawClient(port)
    try:
        resp3.call("HELLO", "3")
        assert resp3.call("CLIENT", "TRACKING", "on") == b"OK"
        redirect_id = redirect.call("CLIENT", "ID").decode()
        redirect.call("SUBSCRIBE", "__redis__:invalidate")
        assert resp2.call("CLIENT", "TRACKING", "on", "REDIRECT", redirect_id) == b"OK"
        received = 0
        for i in range(TRACKING_ROUNDS):
            resp3.call("GET", key)
            resp2.call("GET", key)
            writer.set(key, f"v{i}")
            push = resp3.frame()
            assert push[0] == b">" and push[1][0] == b"invalidate" and push[1][1] == (b"*", [key.encode()])
            message = redirect.frame()
            assert message[1][:2] == [b"message", b"__redis__:invalidate"] and message[1][2][1] == [key.encode()]
            received += 2
        return received
    finally:
        for c in (resp3, resp2, redirect):
            c.close()


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """Run every scenario under the tracer; the report and what the clients saw."""
    where = tmp_path_factory.mktemp("patterns")
    server = RedisServer(dir=str(where / "redis")).start()
    truth = {}
    try:
        c = server.client()
        c.set("e2e:page:home", "x" * BIG_VALUE_BYTES)
        trace = where / "patterns.rtrace"
        # --full: the cache-pattern detectors need every request, and the default (engine) mode sends
        # only slow, stalled and sampled ones up
        tracer = TracerProcess("record", "--full", "--port", str(server.port), "-o", str(trace))
        try:
            side = server.client()
            found = {}
            slow = [threading.Thread(target=lambda: found.update(penetration=penetration(side)), daemon=True)]
            slow[0].start()
            truth["avalanche"] = avalanche(c)
            truth["stampede"] = stampede(server.port, "e2e:product:1", clients=STAMPEDE_CLIENTS)
            for mode in ("plain", "lua", "watch"):
                truth[mode] = inventory_race(server.port, f"e2e:stock:{mode}", rounds=RACE_ROUNDS, mode=mode)
            pipe = c.pipeline(transaction=False)
            for i in range(HOT_READS):
                pipe.get("e2e:config:flags")
                if i % 100 == 99:
                    pipe.execute()
            c.set("e2e:config:flags", "on")
            truth["invalidations"] = tracking(server.port, "e2e:config:flags", c)
            for _ in range(BIG_READS):
                c.get("e2e:page:home")
            slow[0].join(30)
            truth.update(found)
        finally:
            rc, _ = tracer.stop()
        assert rc == 0, tracer.stderr_text()
        c.close()
        side.close()
        yield report_of(trace), truth, trace
    finally:
        server.stop()


def only(report, kind: str) -> list[dict]:
    return [p for p in report["patterns"] if p["kind"] == kind]


def test_stampede(traced):
    report, truth, _ = traced
    assert truth["stampede"] == STAMPEDE_CLIENTS         # every client missed and rebuilt
    (p,) = only(report, "stampede")
    assert p["keys"] == ["e2e:product:1"] and p["count"] == 1 and p["input"] == "full"
    assert p["figures"]["missing_clients"] == STAMPEDE_CLIENTS and p["figures"]["setters"] == STAMPEDE_CLIENTS
    assert 50 <= p["figures"]["time_to_first_set_ms"] < 1000      # the 50 ms "database load" first
    assert 0 <= p["window_ms"] < 50 and len(p["clients"]) == 5
    assert any("NX PX" in a for a in p["advice"])


def test_race_and_its_atomic_controls(traced):
    report, truth, _ = traced
    assert truth["plain"] == truth["lua"] == truth["watch"] == RACE_ROUNDS   # same interleaving in all three
    races = only(report, "race")
    assert [p["keys"] for p in races] == [["e2e:stock:plain"]]      # not the Lua or WATCH/MULTI inventory
    (p,) = races
    assert p["count"] == RACE_ROUNDS and len(p["clients"]) == 2
    assert any("Lua" in a for a in p["advice"]) and any("WATCH" in a for a in p["advice"])


def test_penetration(traced):
    report, truth, _ = traced
    assert truth["penetration"] == PENETRATION_MISSES
    (p,) = only(report, "penetration")
    assert p["keys"][0] == "e2e:user:*" and p["count"] == PENETRATION_MISSES
    assert p["figures"]["miss_share"] == 1.0 and p["figures"]["distinct_keys"] == PENETRATION_MISSES
    assert any("Bloom" in a for a in p["advice"])


def test_avalanche(traced):
    report, truth, _ = traced
    assert truth["avalanche"] == AVALANCHE_KEYS
    (p,) = only(report, "avalanche")
    assert p["keys"][0] == "e2e:sku:*" and p["figures"]["keys_in_worst_second"] == AVALANCHE_KEYS
    assert 1000 <= p["figures"]["inferred_ttl_ms"] < 1500       # PX 1000, read every 100 ms
    assert any("jitter" in a for a in p["advice"])


def test_hot_key(traced):
    report, _, _ = traced
    (p,) = only(report, "hot-key")
    assert p["keys"] == ["e2e:config:flags"]
    reads, writes = HOT_READS + 2 * TRACKING_ROUNDS, 1 + TRACKING_ROUNDS     # the tracking clients' too
    assert p["figures"]["reads"] == reads and p["figures"]["writes"] == writes
    assert p["figures"]["saved_requests"] == reads - writes
    assert any("CLIENT TRACKING" in a for a in p["advice"])


def test_hot_key_counts_the_invalidations_the_tracking_clients_received(traced):
    report, truth, _ = traced
    (p,) = only(report, "hot-key")
    assert truth["invalidations"] == 2 * TRACKING_ROUNDS
    assert p["figures"]["invalidations"] == truth["invalidations"]
    assert p["figures"]["invalidated_clients"] == 2     # the RESP3 connection and the RESP2 redirect
    assert f"e2e:config:flags: {truth['invalidations']:,} invalidations pushed to 2 tracking clients" in p["evidence"]
    assert "2 clients turned on CLIENT TRACKING" in p["evidence"]


def test_big_value(traced):
    report, _, _ = traced
    (p,) = only(report, "big-value")
    assert p["keys"] == ["e2e:page:home"] and p["count"] == BIG_READS
    assert p["figures"]["max_reply_bytes"] >= BIG_VALUE_BYTES and p["figures"]["bytes"] >= BIG_READS * BIG_VALUE_BYTES


def test_report_text_gives_the_advice(traced):
    _, _, trace = traced
    out = subprocess.run([sys.executable, "-m", "tracer", "report", str(trace)], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "Cache patterns: 6" in out
    assert "  - stampede: 8 clients got nil for e2e:product:1" in out
    assert "  - race: 20 times a client read e2e:stock:plain" in out
    assert "advice: do the check and the write in one atomic step: a Lua script" in out


def test_calm_benchmark_traffic_has_no_patterns(redis_server, tmp_path):
    trace = tmp_path / "calm.rtrace"
    tracer = TracerProcess("record", "--port", str(redis_server.port), "-o", str(trace))
    # every default test (LRANGE_600's 5.4 kB replies included), then random keys
    for n, args in (("2000", []), ("10000", ["-t", "set,get,incr", "-r", "1000"])):
        subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(redis_server.port), "-n", n, "-c", "10",
                        "-q", *args], check=True, capture_output=True, timeout=120)
    rc, _ = tracer.stop()
    report = report_of(trace)
    assert report["requests"] >= 70000
    assert report["patterns"] == []
    assert report["big_keys"][0] == ["mylist", 5406]       # LRANGE 0 599 of 3-byte elements, not a sum
