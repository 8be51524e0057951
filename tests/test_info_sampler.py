"""INFO samples: the record round trip, the sampler against a real redis-server (not traced here: its
staying out of a trace is checked in test_info_sampler_e2e.py), and its giving up quietly."""
from __future__ import annotations

import socket
import time

from tracer.credentials import NO_CREDENTIALS
from tracer.kernel import events
from tracer.kernel.info import InfoSample, info_of, info_record, parse_info
from tracer.kernel.target import Target
from tracer.runtime.info_sampler import InfoSampler
from tracer.runtime.pipeline import Pipeline

INFO_TEXT = ("# Stats\r\nexpired_keys:1234\r\nevicted_keys:0\r\nkeyspace_hits:9\r\n"
             "# Persistence\r\nlatest_fork_usec:321\r\n# Memory\r\nmem_fragmentation_ratio:1.25\r\n")


def test_parse_and_record_round_trip():
    sample = parse_info(INFO_TEXT)
    assert sample == InfoSample(expired_keys=1234, evicted_keys=0, latest_fork_usec=321, mem_fragmentation_ratio=1.25)
    raw = info_record(sample, tgid=42, ts=5_000_000_000)
    ev = events.decode(raw)
    assert ev.kind == events.INFO and events.KIND_NAMES[ev.kind] == "info"
    got = info_of(ev)
    assert (got.tgid, got.ts, got.sample) == (42, 5_000_000_000, sample)


def test_missing_and_malformed_fields_read_back_as_none():
    sample = parse_info("expired_keys:x1\r\nevicted_keys:7\r\nother:1\r\n")
    assert sample == InfoSample(evicted_keys=7)
    assert info_of(events.decode(info_record(sample, 1, 1))).sample == sample
    hostile = events.encode(events.Event(kind=events.INFO, tgid=1, payload=b"expired_keys:5\n" + b"x" * 100_000))
    assert info_of(events.decode(hostile)).sample == InfoSample(expired_keys=5)


def test_pipeline_hands_samples_to_the_avalanche_detector():
    pipeline = Pipeline()
    pipeline.feed([info_record(parse_info(INFO_TEXT), 42, 7_000_000_000)])
    assert list(pipeline.analyzer.patterns.avalanche.expired) == [(7_000_000_000, 1234)]


def target_of(server) -> Target:
    return Target(pid=server.pid, exe="redis-server", listen_ports=[server.port], port=server.port)


def test_sampler_samples_at_start_on_its_period_and_at_stop_without_errors(redis_server):
    c = redis_server.client()
    errors = c.info("errorstats")
    c.set("k", "v", px=1)
    time.sleep(0.05)
    sampler = InfoSampler([target_of(redis_server)], credentials=NO_CREDENTIALS, every_s=0.1)
    assert len(sampler.server_fds) == 1 and len(sampler.records) == 1       # the sample at attach
    sampler.start()
    time.sleep(0.35)
    (pid, fd), = sampler.server_fds     # the target's end of the sampler's connection
    assert pid == redis_server.pid and f" fd={fd} " in c.execute_command("CLIENT", "LIST").decode()
    taken = sampler.take()
    taken += sampler.stop()
    samples = [info_of(events.decode(raw)) for raw in taken]
    assert len(samples) >= 4 and all(s.tgid == redis_server.pid for s in samples)
    assert [s.ts for s in samples] == sorted(s.ts for s in samples)
    assert samples[-1].sample.expired_keys == c.info("stats")["expired_keys"]
    assert samples[-1].sample.latest_fork_usec is not None
    assert c.info("errorstats") == errors


def test_sampler_gives_up_quietly_on_a_silent_target():
    """A "Redis" that accepts and never answers: the first sample times out, nothing is sampled, and
    neither the constructor nor stop() waits longer than the timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        started = time.monotonic()
        sampler = InfoSampler([Target(pid=1, exe="x", listen_ports=[port], port=port)], NO_CREDENTIALS, every_s=0.1,
                              timeout_s=0.2)
        sampler.start()
        assert sampler.stop() == [] and sampler.server_fds == set()
        assert time.monotonic() - started < 2
