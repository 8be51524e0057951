"""Analyzer, histogram and report on synthetic streams (no root)."""
from __future__ import annotations

import gc
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.analyze.analysis import Analyzer
from tracer.analyze.topk import SpaceSaving, TopMax
from tracer.analyze.histogram import MAX_NS, NBUCKETS, LatencyHistogram, nearest_rank
from tracer.stitch.model import BusySpan, Connection, FileSync, Request

PID = 777
US = 1_000
MS = 1_000_000
S = 1_000_000_000
T0 = 50 * S
TARGET = {"pid": PID, "port": 6379, "redis_version": "7.2.4"}


def mkreq(conn, command, key, start, latency, *, exec_ns=3 * US, reply_bytes=10, answered=True):
    r = Request()
    r.tgid = PID
    r.conn_id = conn
    r.fd = 100 + conn
    r.client = f"127.0.0.1:{50000 + conn}"
    r.thread = PID
    r.reply_thread = PID
    r.command = command
    r.key = key
    r.arrival_ts = start
    r.wake_ts = start + 1 * US
    r.read_start_ts = start + 2 * US
    r.read_end_ts = start + 3 * US
    r.exec_start_ts = r.read_end_ts
    r.exec_end_ts = r.exec_start_ts + exec_ns
    if answered:
        r.reply_end_ts = start + max(latency, exec_ns + 5 * US)
        r.reply_start_ts = r.reply_end_ts - 1 * US
        r.reply_type = "ok"
    r.reply_bytes = reply_bytes if answered else 0
    return r


def stream(seed=1, n=3000):
    """Mixed traffic with one 400 ms DEL stall, fsyncs, connections and unanswered requests."""
    rng = random.Random(seed)
    items = []
    t = T0
    for i in range(n):
        t += rng.randint(50, 400) * US
        cmd = rng.choice(["GET", "GET", "SET", "HGET", "get"])
        items.append(mkreq(1 + i % 16, cmd, f"key:{rng.randint(0, 300)}", t, rng.randint(20, 3000) * US))
        if i % 25 == 0:
            items.append(BusySpan(PID, t - 2 * MS, t - 2 * MS + rng.randint(1, 30) * MS))
        if i % 100 == 0:
            items.append(FileSync(PID, PID + 2, 9, "fdatasync", t, t + rng.randint(100, 5000) * US))
            items.append(FileSync(PID, PID, 9, "aof-write", t, t + 20 * US, 512))
        if i == n // 2:
            t += 10 * MS
            d = mkreq(99, "DEL", "big:set", t, 0, exec_ns=400 * MS, reply_bytes=4)
            d.wake_ts = t
            items.append(d)
            items.append(BusySpan(PID, t, d.reply_end_ts + 5 * US))
            for j in range(12):   # arrive during the DEL, answered after it
                v = mkreq(200 + j % 4, "GET", f"v{j}", t + 10 * MS + j * 20 * MS, 0)
                v.read_start_ts = d.reply_end_ts + 20 * US + j * US
                v.wake_ts = v.read_start_ts - 1 * US
                v.read_end_ts = v.read_start_ts + 1 * US
                v.exec_start_ts, v.exec_end_ts = v.read_end_ts, v.read_end_ts + 2 * US
                v.reply_start_ts, v.reply_end_ts = v.exec_end_ts + 1 * US, v.exec_end_ts + 3 * US
                items.append(v)
            t = d.reply_end_ts + 1 * MS
    for j in range(5):
        c = Connection(PID, 500 + j, 40 + j, f"127.0.0.1:{60000 + j}")
        c.established_ts = T0 + j * MS
        c.accept_ts = c.established_ts + (j + 1) * 10 * US
        c.close_ts = t + j * US
        c.closed_by = "client"
        items.append(("accept", c))
        items.append(c)
    items.append(mkreq(3, "BLPOP", "queue", t, 0, answered=False))
    return items


def emit_ts(item):
    if isinstance(item, Request):
        return item.reply_end_ts or item.read_end_ts
    if isinstance(item, tuple):
        return item[1].accept_ts
    if isinstance(item, Connection):
        return item.close_ts
    return item.end_ts


def feed(an, items, snapshots=False):
    for i, item in enumerate(sorted(items, key=emit_ts)):
        if isinstance(item, Request):
            an.on_request(item)
        elif isinstance(item, BusySpan):
            an.on_busy(item)
        elif isinstance(item, FileSync):
            an.on_sync(item)
        elif isinstance(item, tuple):
            an.on_accept(item[1])
        else:
            an.on_conn(item)
        if snapshots and i % 97 == 0:
            an.snapshot(T0 + i * 7)
            an.report(TARGET)


# -- report --------------------------------------------------------------------------------------
REPORT_KEYS = {"schema", "target", "duration_s", "requests", "lost_events", "commands", "stalls", "fsync",
               "connections"}
REPORT_EXTRAS = {"hot_keys", "big_keys", "phases_us_total", "unanswered", "busy_ratio", "losses", "loss_spans",
                 "lost_requests", "patterns", "patterns_input"}
STALL_KEYS = {"start_s", "duration_ms", "command", "key", "client", "victims", "victim_added_ms"}
STALL_EXTRAS = {"class", "evidence", "advice", "culprits", "victim_added_total_ms", "victim_added_mean_ms",
                "end_s"}


def test_report_schema_exact():
    an = Analyzer(stall_ms=50)
    feed(an, stream())
    an.set_counters(lost=3, busy_ns=400 * MS, idle_ns=600 * MS)
    an.finish()
    rep = json.loads(json.dumps(an.report(TARGET, clock_first_ts=T0 - S).to_json()))
    assert REPORT_KEYS <= set(rep) <= REPORT_KEYS | REPORT_EXTRAS
    assert rep["schema"] == 1
    assert rep["target"] == {"pid": PID, "port": 6379, "redis_version": "7.2.4"}
    assert isinstance(rep["duration_s"], float) and rep["duration_s"] > 1.0
    assert rep["requests"] == 3000 + 1 + 12 + 1 and rep["unanswered"] == 1
    assert rep["lost_events"] == 3
    assert rep["busy_ratio"] == 0.4
    assert set(rep["commands"]) == {"GET", "SET", "HGET", "DEL", "BLPOP"}   # "get" folded upper-case
    for name, c in rep["commands"].items():
        assert set(c) == {"count", "p50_us", "p99_us", "max_us"}
        assert isinstance(c["count"], int)
        assert all(isinstance(c[k], float) for k in ("p50_us", "p99_us", "max_us"))
        assert c["p50_us"] <= c["p99_us"] <= c["max_us"]
    assert rep["commands"]["BLPOP"] == {"count": 1, "p50_us": 0.0, "p99_us": 0.0, "max_us": 0.0}
    assert len(rep["stalls"]) == 1
    stall = rep["stalls"][0]
    assert STALL_KEYS <= set(stall) <= STALL_KEYS | STALL_EXTRAS
    assert stall["command"] == "DEL" and stall["key"] == "big:set" and stall["client"] == "127.0.0.1:50099"
    assert stall["class"] == "bigkey" and stall["victims"] == 12
    assert isinstance(stall["start_s"], float) and stall["start_s"] > 1.0
    assert rep["fsync"] == {"count": 30, "main_thread": 0, "p99_us": rep["fsync"]["p99_us"],
                            "max_us": rep["fsync"]["max_us"]}
    assert 100.0 <= rep["fsync"]["p99_us"] <= rep["fsync"]["max_us"] <= 5000.0
    assert rep["connections"] == {"accepted": 5, "closed": 5}
    assert set(rep["phases_us_total"]) == {"socket_queue", "wait", "exec", "reply_write"}
    assert rep["big_keys"][0] == ["key:0", 10] or rep["big_keys"][0][1] == 10


def test_report_identical_for_two_feeds_and_unaffected_by_snapshots():
    items = stream(seed=7)
    outs = []
    for snaps in (False, True):
        an = Analyzer(stall_ms=50)
        feed(an, items, snapshots=snaps)
        an.set_counters(lost=0)
        before_finish = json.dumps(an.report(TARGET, clock_first_ts=T0).to_json())
        an.finish()
        after = json.dumps(an.report(TARGET, clock_first_ts=T0).to_json())
        assert before_finish == after       # open stalls are reported as they stand
        outs.append(after)
    assert outs[0] == outs[1]


def test_stalls_sorted_longest_first():
    an = Analyzer(stall_ms=50)
    for i, d in enumerate((60, 300, 120)):
        an.on_busy(BusySpan(PID, T0 + i * 5 * S, T0 + i * 5 * S + d * MS))
    an.finish()
    rep = an.report(TARGET).to_json()
    assert [s["duration_ms"] for s in rep["stalls"]] == [300.0, 120.0, 60.0]
    assert [s["start_s"] for s in rep["stalls"]] == [5.0, 10.0, 0.0]
    assert [s["class"] for s in rep["stalls"]] == ["not-redis"] * 3


def test_percentiles_in_report_within_2_percent():
    rng = random.Random(3)
    an = Analyzer()
    lat = []
    t = T0
    for i in range(20000):
        t += 100 * US
        v = int(rng.lognormvariate(11, 1.5)) + 20 * US
        lat.append(v)
        an.on_request(mkreq(1, "GET", "k", t, v))
    lat.sort()
    c = an.report(TARGET).to_json()["commands"]["GET"]
    for p, field in ((50, "p50_us"), (99, "p99_us")):
        exact = lat[nearest_rank(p, len(lat)) - 1] / 1000
        assert c[field] == pytest.approx(exact, rel=0.02)
    assert c["max_us"] == lat[-1] / 1000


# -- snapshot ------------------------------------------------------------------------------------
def test_snapshot_rates_phases_and_slowest():
    an = Analyzer(top_n=5)
    t = T0
    slow_key = None
    for i in range(10_000):       # 10 s at 1000 req/s, 80 % GET
        t = T0 + i * MS
        cmd = "GET" if i % 5 else "SET"
        latency = 50 * US if i != 9_501 else 80 * MS
        if i == 9_501:
            slow_key = f"k{i}"
        an.on_request(mkreq(1 + i % 8, cmd, f"k{i}", t, latency))
    snap = an.snapshot(t).to_json()
    assert snap["requests"] == 10_000
    assert snap["rps"] == pytest.approx(1000, rel=0.05)
    assert snap["commands"]["GET"]["rps"] == pytest.approx(800, rel=0.05)
    assert list(snap["commands"]) == ["GET", "SET"]
    g = snap["commands"]["GET"]
    assert g["p50_us"] == pytest.approx(50, rel=0.02)
    assert g["max_us"] == pytest.approx(80_000, rel=0.001)
    assert 0.79 <= g["exec_share"] <= 0.81
    assert len(g["spark"]) == 16 and sum(g["spark"]) == 8000
    assert snap["elapsed_s"] == pytest.approx(10.0, abs=0.01)
    assert len(snap["slowest"]) == 5
    top = snap["slowest"][0]
    assert top["key"] == slow_key and top["latency_us"] == pytest.approx(80_000.0)
    assert [p for p, _ in top["phases"]] == ["socket_queue", "wait", "exec", "reply_write"]
    assert len(top["offsets_us"]) == 4 and top["offsets_us"][0] == 0.0
    assert top["segments"][-1][0] == "reply_write"
    assert top["segments"][-1][1] + top["segments"][-1][2] == pytest.approx(top["latency_us"])
    assert set(snap["phases_us_total"]) == {"socket_queue", "wait", "exec", "reply_write"}
    # rates fall to zero when trace time moves on without traffic
    later = an.snapshot(t + 30 * S).to_json()
    assert later["rps"] == 0 and later["slowest"] == []


def test_snapshot_stalls_newest_first_and_open_flag():
    an = Analyzer(stall_ms=50)
    for i in range(14):
        an.on_busy(BusySpan(PID, T0 + i * 3 * S, T0 + i * 3 * S + (60 + i) * MS))
    snap = an.snapshot().to_json()
    assert len(snap["stalls"]) == 10
    assert [s["duration_ms"] for s in snap["stalls"]] == [float(60 + i) for i in range(13, 3, -1)]
    assert snap["stalls"][0]["open"] is True and snap["stalls"][1]["open"] is False


def test_connections_and_fsync_stats():
    an = Analyzer()
    conns = []
    for j in range(4):
        c = Connection(PID, j + 1, 10 + j, f"10.1.1.1:{1000 + j}")
        c.established_ts = T0 + j * S
        c.accept_ts = c.established_ts + (j + 1) * 100 * US
        conns.append(c)
        an.on_accept(c)
    for c in conns[:3]:
        c.close_ts = T0 + 5 * S
        an.on_conn(c)
    old = Connection(PID, 77, 30, None)   # existed before the trace
    old.close_ts = T0 + 6 * S
    an.on_request(mkreq(77, "PING", None, T0 + 5 * S, 20 * US))
    an.on_conn(old)
    snap = an.snapshot(T0 + 6 * S).to_json()
    assert snap["connections"]["accepted"] == 4
    assert snap["connections"]["closed"] == 4
    assert snap["connections"]["open"] == 1
    assert snap["connections"]["accept_queue_p99_us"] == pytest.approx(400, rel=0.02)
    # without on_accept, closed connections that were accepted during the trace are counted at close
    an2 = Analyzer()
    for c in conns[:3]:
        an2.on_conn(c)
    an2.on_conn(old)
    assert an2.report(TARGET).to_json()["connections"] == {"accepted": 3, "closed": 4}
    an2.on_accept_count(9)
    assert an2.report(TARGET).to_json()["connections"]["accepted"] == 9

    for k in range(10):
        an.on_sync(FileSync(PID, PID if k < 3 else PID + 1, 5, "fsync", T0 + k * MS, T0 + k * MS + (k + 1) * MS))
    an.on_sync(FileSync(PID, PID, 5, "aof-write", T0, T0 + 250 * US, 4096))
    f = an.snapshot().to_json()["fsync"]
    assert f["count"] == 10 and f["main_thread"] == 3
    assert f["max_us"] == 10_000.0 and f["p99_us"] == pytest.approx(10_000, rel=0.02)
    assert f["aof_writes"] == 1 and f["aof_write_max_us"] == 250.0


def test_busy_ratio_kernel_counters_preferred():
    an = Analyzer()
    an.on_busy(BusySpan(PID, T0, T0 + 10 * MS))
    an.on_busy(BusySpan(PID, T0 + 90 * MS, T0 + 100 * MS))
    assert an.snapshot().to_json()["busy_ratio"] == 0.2
    an.set_counters(lost=1, busy_ns=300, idle_ns=700)
    an.set_counters(lost=1, busy_ns=800, idle_ns=1200)
    snap = an.snapshot().to_json()
    assert snap["busy_ratio"] == 0.4 and snap["busy_ratio_recent"] == 0.5 and snap["lost_events"] == 1


def test_hot_and_big_keys():
    an = Analyzer()
    t = T0
    for i in range(1000):
        t += 10 * US
        key = "hot" if i % 2 else f"cold{i}"
        an.on_request(mkreq(1, "GET", key, t, 10 * US, reply_bytes=2_000_000 if i == 500 else 50))
    rep = an.report(TARGET).to_json()
    assert rep["hot_keys"][0] == ["hot", 500]
    assert rep["big_keys"][0] == ["cold500", 2_000_000]


# -- memory bounds -----------------------------------------------------------------------------------
def _live_requests() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Request)


def test_memory_bounded_with_300k_unique_keys():
    """300k requests (100k/s of trace time), every key unique, 1000 command names, a 70 ms span
    every 0.2 s: the state stays capped and the retained requests do not grow with the trace."""
    # Requests an earlier test left alive (the last replay's pipeline stays referenced until the next
    # one replaces it) are not this analyzer's: count only what it adds
    baseline = _live_requests()
    an = Analyzer(stall_ms=50)
    t = T0
    live = []
    for i in range(1, 300_001):
        t += 10 * US
        an.on_request(mkreq(1 + i % 500, "GET" if i % 3 else f"CMD{i % 1000}", f"unique:{i}", t, 30 * US,
                            reply_bytes=i))
        if i % 20_000 == 0:
            an.on_busy(BusySpan(PID, t - 70 * MS, t))
        if i % 50_000 == 0:
            live.append(_live_requests() - baseline)
    assert an.requests == 300_000
    assert len(an.hot_keys) <= 2000 and len(an.big_keys) <= 2000
    assert len(an.detector.lookback) <= 50_000
    assert len(an.commands) <= 513
    assert len(an.slow_secs) <= 12 and len(an.req_secs.counts) <= 12
    assert all(len(c.secs.counts) <= 12 for c in an.commands.values())
    assert all(len(st.inspan) <= 2000 and len(st.heavy) <= 500 for st in an.detector.open)
    assert an.detector.stalls_total == 15 and len(an.detector.open) <= 11
    bound = 50_000 + 11 * 2_500 + 12 * an.top_n
    assert all(n <= bound for n in live), live
    assert abs(live[-1] - live[-3]) <= 2_500, live      # steady (within one stall) once the join window is full
    # the biggest replies survive the bounded top-K
    assert an.big_keys.top(1)[0] == ("unique:300000", 300_000)
    an.finish()
    assert not an.detector.open and _live_requests() - baseline <= 50_000 + 12 * an.top_n


def test_lookback_bounded_by_trace_time():
    an = Analyzer()
    for i in range(20_000):
        an.on_request(mkreq(1, "GET", "k", T0 + i * MS, 10 * US))   # 20 s at 1000/s
    assert len(an.detector.lookback) <= 5_100


def test_space_saving_and_topmax():
    ss = SpaceSaving(cap=100)
    for i in range(10_000):
        ss.add(f"u{i}")
        if i % 10 == 0:
            ss.add("hot", 5)
    assert len(ss) <= 100
    assert ss.top(1)[0][0] == "hot" and ss.top(1)[0][1] >= 5000
    tm = TopMax(cap=100)
    for i in range(10_000):
        tm.add(f"k{i}", (i * 7919) % 10_007)
    assert len(tm) <= 100
    assert [v for _, v in tm.top(3)] == [10_006, 10_005, 10_004]


# -- histogram -------------------------------------------------------------------------------------
values = st.lists(st.integers(min_value=1_000, max_value=MAX_NS), min_size=1, max_size=400)


@settings(max_examples=200, deadline=None)
@given(values, st.sampled_from([0, 1, 10, 50, 90, 99, 99.9, 100]))
def test_histogram_percentile_within_2_percent(xs, p):
    h = LatencyHistogram()
    for x in xs:
        h.add(x)
    exact = sorted(xs)[nearest_rank(p, len(xs)) - 1]
    assert abs(h.percentile(p) - exact) <= 0.02 * exact
    assert h.count == len(xs) and h.sum == sum(xs) and h.min == min(xs) and h.max == max(xs)


@settings(max_examples=100, deadline=None)
@given(values, values, st.randoms(use_true_random=False))
def test_histogram_merge_and_order_independence(a, b, rnd):
    h1 = LatencyHistogram()
    for x in a:
        h1.add(x)
    h2 = LatencyHistogram()
    for x in b:
        h2.add(x)
    both = a + b
    rnd.shuffle(both)
    h3 = LatencyHistogram()
    for x in both:
        h3.add(x)
    h1.merge(h2)
    assert h1.counts == h3.counts
    assert (h1.count, h1.sum, h1.min, h1.max) == (h3.count, h3.sum, h3.min, h3.max)
    ps = (1, 50, 99, 99.9)
    assert h1.percentiles(ps) == h3.percentiles(ps) == [h3.percentile(p) for p in ps]
    assert h1.sparkline(20) == h3.sparkline(20)


def test_histogram_constant_size_and_sparkline():
    h = LatencyHistogram()
    assert h.percentile(50) == 0 and h.sparkline(8) == [0] * 8
    for v in (1_000, 10_000, 100_000, 1_000_000, 10 * MAX_NS, -5):
        h.add(v)
    assert len(h.counts) == NBUCKETS < 2300
    assert h.max == 10 * MAX_NS and h.min == 0       # exact extremes, clamped buckets
    sp = h.sparkline(10)
    assert len(sp) == 10 and sum(sp) == 6 and sp[0] >= 1 and sp[-1] >= 1
    fixed = h.sparkline(4, lo_ns=1_000, hi_ns=1_000_000)
    assert sum(fixed) == 6 and fixed[0] == 2 and fixed[-1] == 2


ts = st.one_of(st.just(0), st.integers(min_value=T0, max_value=T0 + 10 * MS))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ts, ts, ts, ts, ts, ts, ts, ts), min_size=1, max_size=20))
def test_inlined_phases_match_request_properties(rows):
    an = Analyzer()
    expect = {"socket_queue": 0, "wait": 0, "exec": 0, "reply_write": 0}
    n_lat = 0
    for arr, wake, rs, re_, xs, xe, ps, pe in rows:
        r = Request()
        r.tgid = PID
        r.conn_id = 1
        r.command = "GET"
        (r.arrival_ts, r.wake_ts, r.read_start_ts, r.read_end_ts,
         r.exec_start_ts, r.exec_end_ts, r.reply_start_ts, r.reply_end_ts) = arr, wake, rs, re_, xs, xe, ps, pe
        for name, v in (("socket_queue", r.socket_queue_ns), ("wait", r.wait_ns), ("exec", r.exec_ns),
                        ("reply_write", r.reply_write_ns)):
            expect[name] += v or 0
        n_lat += r.latency_ns is not None
        an.on_request(r)
    assert an.phase_ns == expect
    assert an.commands["GET"].hist.count == n_lat
    assert an.unanswered == sum(1 for row in rows if not row[7])


def test_unknown_commands_redis_refused_share_the_question_mark_row():
    a = Analyzer()
    t = T0
    for i in range(40):                                  # 40 garbage lines, each its own "name"
        r = mkreq(i + 1, f"\\X{i:02X}GARBAGE{i}", f"junk{i}", t + i * MS, 50 * US)
        r.reply_type, r.reply_error = "error", "ERR"
        a.on_request(r)
    after = mkreq(50, "\\XFFTAIL", "junk", t + 41 * MS, 50 * US, answered=False)   # after a protocol error
    a.on_request(after)
    undecodable = mkreq(51, "?", None, t + 42 * MS, 50 * US)
    a.on_request(undecodable)
    wrong = mkreq(52, "GET", "k", t + 43 * MS, 50 * US)    # a known command answered with an error
    wrong.reply_type = "error"
    a.on_request(wrong)
    module = mkreq(53, "MYMODULE.CMD", "mk", t + 44 * MS, 50 * US)   # unknown to us, answered: its own row
    a.on_request(module)
    for report in (a.report(TARGET).to_json(), a.snapshot().to_json()):
        assert set(report["commands"]) == {"?", "GET", "MYMODULE.CMD"}
        row = report["commands"]["?"]
        assert row["count"] == 42
        assert row["samples"] == [f"\\X{i:02X}GARBAGE{i}" for i in range(5)]
        assert "samples" not in report["commands"]["GET"]
    assert [k for k, _ in a.report(TARGET).to_json()["hot_keys"]] == ["k", "mk"] or \
        sorted(k for k, _ in a.report(TARGET).to_json()["hot_keys"]) == ["k", "mk"]
