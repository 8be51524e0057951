"""Issue 19, defect 2: records lost while the ring buffer was almost empty.

The probes' ring (`events`) can refuse a record with room to spare: since Linux 6.15 its reserve
takes a resilient spinlock that gives up (deadlock suspected, or a timeout) instead of spinning.
Refused records go to a rescue ring with a lock of its own, and each refusal is counted by cause.
These tests run a real redis-server under redis-benchmark and hold the tracer to exact counts
against INFO commandstats, with every refusal accounted for.
"""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tracer_proc import TracerProcess

pytestmark = pytest.mark.bpf

RING_LINE = re.compile(r"ring: (\d+) records refused \((\d+) ring full, (\d+) with room, most unread bytes at a "
                       r"refusal (\d+)\), (\d+) taken by the rescue ring, (\d+) lost")


CHUNK = 50_000  # requests of each command per redis-benchmark run


def ring_counters(stderr: str) -> dict:
    m = RING_LINE.search(stderr)
    assert m, f"no ring line in the tracer's output: {stderr[-2000:]}"
    names = ("refused", "refused_full", "refused_room", "avail_max", "rescued", "lost")
    return dict(zip(names, map(int, m.groups())))


def benchmark(port: int, seconds: float, chunk: int, max_chunks: int) -> int:
    """redis-benchmark GET+INCR (50 clients) in bounded chunks until `seconds` have passed; runs."""
    deadline = time.monotonic() + seconds
    runs = 0
    while time.monotonic() < deadline and runs < max_chunks:
        subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50", "-n", str(chunk),
                        "-t", "get,incr", "-q"], check=True, capture_output=True, timeout=seconds + 30)
        runs += 1
    return runs


def traced_counts(redis_server, tmp_path, seconds: float, chunk: int, max_chunks: int, *tracer_args):
    c = redis_server.client()
    c.config_resetstat()
    live = tmp_path / "live.json"   # the live analysis: the same report as `report`, without re-reading
    tracer = TracerProcess("record", "--port", str(redis_server.port), "-o", str(tmp_path / "load.rtrace"),
                           "--json-out", str(live), *tracer_args)
    runs = benchmark(redis_server.port, seconds, chunk, max_chunks)
    calls = {name.split("_", 1)[1].upper(): s["calls"] for name, s in c.info("commandstats").items()}
    c.close()
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    return calls, json.loads(live.read_text()), ring_counters(tracer.stderr_text()), runs


def test_steady_max_rate_for_a_minute_loses_nothing(redis_server, tmp_path):
    # bounded in time (60 s, then the run in progress ends: each is ~3-8 s here) and in count
    calls, report, ring, runs = traced_counts(redis_server, tmp_path, 60, CHUNK, 60)
    print(f"{runs} redis-benchmark runs, {calls}, ring {ring}")
    assert runs >= 1 and calls["GET"] == calls["INCR"] == CHUNK * runs
    # nothing lost, and every refusal of the main ring was taken by the rescue ring
    assert ring["lost"] == 0 and report["lost_events"] == 0, ring
    assert ring["rescued"] == ring["refused"], ring
    assert ring["refused_full"] == 0, ring          # 64 MiB never fills at this rate
    for name in ("GET", "INCR"):
        assert report["commands"][name]["count"] == calls[name], name
    assert report["unanswered"] == 0


def test_refused_records_reach_the_rescue_ring(redis_server, tmp_path):
    # a 4 KiB main ring refuses most records: every one of them must come through the rescue ring,
    # in order, for the counts to stay exact (before the rescue ring they were lost)
    calls, report, ring, _ = traced_counts(redis_server, tmp_path, 0.1, 2000, 1,
                                           "--ringbuf-pages", "1", "--poll-ms", "10")
    assert ring["refused_full"] > 100, ring
    assert ring["lost"] == 0 and ring["rescued"] == ring["refused"], ring
    for name in ("GET", "INCR"):
        assert report["commands"][name]["count"] == calls[name] == 2000, name
    assert report["unanswered"] == 0 and report["lost_events"] == 0
