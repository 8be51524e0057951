"""The agent's pieces that need no kernel: Prometheus bucket mapping, label bounds, folding of figures."""
from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tracer.agent.figures import AgentFigures, CommandTotals, Histogram, InstanceTotals
from tracer.agent.metrics import (LATENCY_BOUNDS_S, OTHER_LABEL, AgentCollector, CommandLabels, bucket_map,
                                  parse_listen)
from tracer.agent.otlp import traces_url
from tracer.engine.histogram import bucket_index
from tracer.errors import TracerError


def samples(collector) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_buckets_never_count_a_value_above_their_bound():
    rng = random.Random(16)
    values = [rng.randrange(1, 12_000_000_000) for _ in range(20_000)] + [10_000, 10_001, 25_000, 1_000_000_000]
    hist = Histogram()
    for v in values:
        hist.observe(v)
    mapping = bucket_map(LATENCY_BOUNDS_S)
    buckets, total_s = AgentCollector._buckets(hist, mapping, LATENCY_BOUNDS_S)
    assert buckets[-1] == ("+Inf", len(values))
    assert total_s == pytest.approx(sum(values) / 1e9)       # the sum is exact, not bucket midpoints
    for (le, cumulative), bound in zip(buckets, LATENCY_BOUNDS_S):
        truly_below = sum(1 for v in values if v <= bound * 1e9)
        assert cumulative <= truly_below, le
        # the kernel's buckets are 1/16 wide: at most the values within 1/16 under the bound are late
        assert cumulative >= sum(1 for v in values if v < bound * 1e9 * 15 / 16), le


def test_bucket_map_is_monotonic_and_covers_every_kernel_bucket():
    mapping = bucket_map(LATENCY_BOUNDS_S)
    assert mapping == sorted(mapping)
    assert mapping[bucket_index(5_000)] == 0 and mapping[-1] == len(LATENCY_BOUNDS_S)


def test_command_labels_are_capped_sticky_and_never_unknown_names():
    labels = CommandLabels(cap=2)
    known = {"GET", "SET", "DEL", "(other)"}
    assert labels("(other)", known) == OTHER_LABEL
    assert labels("GET", known) == "get"
    assert labels("NOTACOMMAND", known) == OTHER_LABEL
    assert labels("SET", known) == "set"
    assert labels("DEL", known) == OTHER_LABEL          # beyond the cap
    assert labels("GET", known) == "get"                 # sticky


def test_collector_folds_rare_commands_into_other_and_sums_exactly():
    figures = AgentFigures(known_commands=frozenset({"GET", "SET", "HSET"}), lost_events=7)
    inst = figures.instance("host:6379")
    for name, n in (("GET", 5), ("SET", 3), ("HSET", 2), ("garbage\r\n", 4)):
        inst.commands.setdefault(name, CommandTotals()).requests += n
    inst.add_stall("bigkey", 0.25)
    inst.add_stall("bigkey", 0.5)
    got = samples(AgentCollector(lambda: figures, command_cap=2))
    req = {dict(k[1])["command"]: v for k, v in got.items() if k[0] == "redis_tracer_requests_total"}
    assert req == {"get": 5, "set": 3, OTHER_LABEL: 6}
    assert got[("redis_tracer_stalls_total", (("class", "bigkey"), ("instance", "host:6379")))] == 2
    assert got[("redis_tracer_stall_seconds_total", (("class", "bigkey"), ("instance", "host:6379")))] == 0.75
    assert got[("redis_tracer_lost_events_total", ())] == 7
    assert not any("key" in dict(k[1]) or "client" in dict(k[1]) for k in got)


def test_figures_of_two_sessions_add_up():
    a, b = InstanceTotals(), InstanceTotals()
    a.fsync.observe(1_000_000)
    b.fsync.observe(3_000_000)
    a.add_stall("aof", 0.1)
    merged = AgentFigures(instances={"x": a}).merged(AgentFigures(instances={"x": b}, lost_events=2))
    assert merged.instances["x"].fsync.count == 2 and merged.instances["x"].fsync.sum_ns == 4_000_000
    assert merged.instances["x"].stalls == {"aof": [1, 0.1]} and merged.lost_events == 2


@pytest.mark.parametrize("text, want", [("127.0.0.1:9386", ("127.0.0.1", 9386)), ("[::1]:80", ("::1", 80)),
                                        (":9386", ("0.0.0.0", 9386))])
def test_parse_listen(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["9386", "host:", "host:99999", "host:x"])
def test_parse_listen_refuses_with_one_line(text):
    with pytest.raises(TracerError, match="ADDR:PORT"):
        parse_listen(text)


def test_traces_url():
    assert traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces/") == "http://c:4318/v1/traces"
