"""The INFO sampler on a real redis-server under the tracer: its samples reach the recording and the
avalanche evidence, its own connection stays out of the trace, and the server counts no error for it."""
from __future__ import annotations

import time

import pytest

from tracer.kernel import events
from tracer.kernel.info import info_of
from tracer.sandbox.redis_server import RedisServer
from tracer.tracefile.recording import TraceReader
from tracer_proc import TracerProcess, report_of

pytestmark = pytest.mark.bpf

KEYS = 100
BATCH = 25      # requests per pipeline: a batch stays within one 4 KiB capture


def errorstats(c) -> dict:
    return c.info("errorstats")


def test_avalanche_is_corroborated_by_info_and_the_sampler_stays_out_of_the_trace(tmp_path):
    server = RedisServer(dir=str(tmp_path / "redis")).start()
    try:
        c = server.client()
        errors_before = errorstats(c)
        trace = tmp_path / "info.rtrace"
        # --full: the avalanche detector needs every miss (the engine sends only slow and sampled requests)
        tracer = TracerProcess("record", "--full", "--port", str(server.port), "-o", str(trace))
        try:
            time.sleep(0.3)
            keys = [f"ttl:item:{i}" for i in range(KEYS)]
            for i in range(0, KEYS, BATCH):
                pipe = c.pipeline(transaction=False)
                for k in keys[i:i + BATCH]:
                    pipe.set(k, "v", px=1000)
                pipe.execute()
            time.sleep(1.1)
            for i in range(0, KEYS, BATCH):
                pipe = c.pipeline(transaction=False)
                for k in keys[i:i + BATCH]:
                    pipe.get(k)
                assert all(v is None for v in pipe.execute())     # each GET expires its key (or finds it gone)
            time.sleep(0.2)
        finally:
            rc, _ = tracer.stop()
        assert rc == 0, tracer.stderr_text()
        expired_total = c.info("stats")["expired_keys"]
        assert errorstats(c) == errors_before
        c.close()
    finally:
        server.stop()
    report = report_of(trace)
    (p,) = [p for p in report["patterns"] if p["kind"] == "avalanche"]
    assert p["count"] == KEYS       # their first misses (one or two seconds, as the batch falls)
    # the sampler asked at attach and at the end: the last sample counts every key expired
    with TraceReader(trace) as reader:
        samples = [info_of(ev) for ev in map(events.decode, reader.records()) if ev.kind == events.INFO]
    assert len(samples) >= 2 and samples[0].sample.expired_keys == 0
    assert samples[-1].sample.expired_keys == expired_total == KEYS
    assert samples[0].sample.mem_fragmentation_ratio is not None and samples[0].sample.latest_fork_usec is not None
    # the evidence: the growth of expired_keys between the samples around the worst second (Redis also
    # expires keys actively, 10 times a second, so a sample may fall between some expiries and the misses)
    figure, window = p["figures"]["info_expired_keys"], p["figures"]["info_window_s"]
    assert 0 < figure <= KEYS and 0 < window
    assert any(y.sample.expired_keys - x.sample.expired_keys == figure and round((y.ts - x.ts) / 1e9, 3) == window
               for x, y in zip(samples, samples[1:]))
    assert f"INFO: {figure:,} keys expired in the {window:.1f} s around that second" in p["evidence"]
    assert "INFO" not in str(report["commands"])
    assert report["requests"] == 2 * KEYS      # the SETs and the GETs: the sampler's INFOs are not traced
