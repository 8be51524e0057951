"""The cache-pattern detectors on synthetic request streams: for each pattern one true case and the
near misses that must not be reported. Root-free (tracer/analyze/patterns/)."""
from __future__ import annotations

import json

import pytest

from tracer.analyze.analysis import Analyzer
from tracer.analyze.patterns import PatternDetectors
from tracer.analyze.patterns.common import Bounded, key_prefix
from tracer.options import PatternOptions
from tracer.schema import Pattern, Report
from tracer.stitch.model import Invalidation, Request

MS = 1_000_000
T0 = 10_000 * MS


class Wire:
    """A request stream in execution order: each call is one request, `at` ms after T0."""

    def __init__(self, options: PatternOptions = PatternOptions()):
        self.detectors = PatternDetectors(options)
        self.conn_ids: dict = {}

    def __call__(self, at_ms: float, client: int, command: str, key=None, reply: str = "ok",
                 reply_bytes: int = 5, sent_ms: float | None = None):
        req = Request()
        req.client = f"127.0.0.1:{50000 + client}"
        req.conn_id = self.conn_ids.setdefault(client, len(self.conn_ids) + 1)
        req.command, req.key, req.reply_type, req.reply_bytes = command, key, reply, reply_bytes
        t = T0 + int(at_ms * MS)
        req.arrival_ts = T0 + int(sent_ms * MS) if sent_ms is not None else t - 20_000
        req.read_start_ts, req.read_end_ts = t - 10_000, t
        req.exec_start_ts, req.exec_end_ts = t, t + 5_000
        req.reply_start_ts, req.reply_end_ts = t + 10_000, t + 20_000
        self.detectors.on_request(req)
        return self

    def kinds(self, kind: str) -> list[Pattern]:
        return [p for p in self.detectors.results() if p.kind == kind]

    def all(self) -> list[Pattern]:
        return self.detectors.results()


# -- stampede ----------------------------------------------------------------------------------------------
def stampede(w: Wire, clients: int, spacing_ms: float, fill: bool = True, key: str = "product:42"):
    t = 0.0
    for c in range(clients):
        w(t, c, "GET", key, reply="nil")
        t += spacing_ms
    if fill:
        w(t + 30, 0, "SET", key)
        w(t + 31, 1, "SET", key)
    return w


def test_stampede_many_clients_miss_one_key_then_set_it():
    (p,) = stampede(Wire(), clients=8, spacing_ms=2).kinds("stampede")
    assert p.keys == ["product:42"] and p.count == 1
    assert p.figures["missing_clients"] == 8 and p.figures["setters"] == 2
    assert p.window_ms == pytest.approx(14, abs=0.1)
    assert p.figures["time_to_first_set_ms"] == pytest.approx(46, abs=0.1)
    assert len(p.clients) == 5 and any("SET lock" in a and "NX PX" in a for a in p.advice)
    assert p.input == "full"


@pytest.mark.parametrize("case", ["few clients", "misses spread out", "nobody sets", "one client repeats"])
def test_stampede_near_misses(case):
    w = Wire()
    if case == "few clients":
        stampede(w, clients=3, spacing_ms=2)
    elif case == "misses spread out":
        stampede(w, clients=8, spacing_ms=1500)
    elif case == "nobody sets":
        stampede(w, clients=8, spacing_ms=2, fill=False)
    else:
        for i in range(10):
            w(i * 3, 0, "GET", "product:42", reply="nil")
        w(40, 0, "SET", "product:42")
    assert w.kinds("stampede") == []


def test_stampede_lock_key_nil_is_not_a_miss():
    """SET lock NX answers nil to every loser of the mutex: that is the cure, not a stampede."""
    w = Wire()
    for c in range(8):
        w(c, c, "SET", "lock:product:42", reply="nil")
    w(20, 0, "SET", "product:42")
    assert w.all() == []


# -- penetration -------------------------------------------------------------------------------------------
def test_penetration_random_ids_never_set():
    w = Wire()
    for i in range(300):
        w(i * 10, i % 4, "GET", f"user:{900000 + i}", reply="nil")      # 3 s of misses, none ever SET
        w(i * 10 + 1, i % 4, "GET", f"item:{i % 20}")                   # another prefix hits
    (p,) = w.kinds("penetration")
    assert p.keys[0] == "user:*" and p.count == 300
    assert p.figures["miss_share"] == 1.0 and p.figures["distinct_keys"] == 300
    assert any("null" in a and "TTL" in a for a in p.advice) and any("Bloom" in a for a in p.advice)


def test_penetration_same_missing_key_over_and_over():
    w = Wire()
    for i in range(200):
        w(i * 10, i % 3, "GET", "user:-1", reply="nil")
    (p,) = w.kinds("penetration")
    assert p.keys == ["user:*", "user:-1"] and "asked 200 times" in p.evidence[1]


@pytest.mark.parametrize("case", ["filled after the miss", "too few", "a burst, not a rate", "mostly hits",
                                  "expired keys"])
def test_penetration_near_misses(case):
    w = Wire()
    if case == "filled after the miss":     # cache-aside: miss, load, SET
        for i in range(300):
            w(i * 10, i % 4, "GET", f"user:{i}", reply="nil")
            w(i * 10 + 2, i % 4, "SET", f"user:{i}")
    elif case == "too few":
        for i in range(50):
            w(i * 100, 0, "GET", f"user:{i}", reply="nil")
    elif case == "a burst, not a rate":
        for i in range(300):
            w(i * 0.1, 0, "GET", f"user:{i}", reply="nil")
    elif case == "mostly hits":
        for i in range(1200):
            w(i * 5, 0, "GET", f"user:{i % 50}", reply="nil" if i % 4 == 0 and i >= 600 else "ok")
        for i in range(600):
            w(6000 + i, 0, "GET", f"user:{1000 + i}", reply="nil" if i % 3 == 0 else "ok")
    else:                                   # SET earlier in the trace, then gone: expiry, not penetration
        for i in range(200):
            w(i, 0, "SET", f"user:{i}")
        for i in range(200):
            w(2000 + i * 10, 0, "GET", f"user:{i}", reply="nil")
    assert w.kinds("penetration") == []


# -- avalanche ---------------------------------------------------------------------------------------------
def test_avalanche_keys_set_together_expire_together():
    w = Wire()
    for i in range(50):
        w(i, 0, "SET", f"sku:{i}")                     # written in bulk with one EX
    for i in range(50):
        w(60_000 + i * 5, 1 + i % 3, "GET", f"sku:{i}", reply="nil")   # all gone 60 s later
    (p,) = w.kinds("avalanche")
    assert p.keys[0] == "sku:*" and p.figures["keys_in_worst_second"] == 50
    assert p.figures["inferred_ttl_ms"] == pytest.approx(60_000 + 25 * 5 - 25, abs=50)
    assert any("jitter" in a for a in p.advice)


@pytest.mark.parametrize("case", ["jittered TTLs", "never set", "few keys"])
def test_avalanche_near_misses(case):
    w = Wire()
    n = 10 if case == "few keys" else 50
    if case != "never set":
        for i in range(n):
            w(i, 0, "SET", f"sku:{i}")
    for i in range(n):
        offset = i * 400 if case == "jittered TTLs" else i * 5     # jitter: spread over 20 s
        w(60_000 + offset, 1, "GET", f"sku:{i}", reply="nil")
    assert w.kinds("avalanche") == []


# -- read-modify-write race --------------------------------------------------------------------------------
def test_race_two_clients_read_then_both_decrement():
    w = Wire()
    for round_ in range(5):
        t = round_ * 100
        w(t, 1, "GET", "stock:1")
        w(t + 1, 2, "GET", "stock:1")
        w(t + 2, 1, "DECRBY", "stock:1")
        w(t + 3, 2, "DECRBY", "stock:1")       # B's check used the stock before A's DECRBY: oversell
    (p,) = w.kinds("race")
    assert p.keys == ["stock:1"] and p.count == 5
    assert p.clients == ["127.0.0.1:50001", "127.0.0.1:50002"]
    assert any("Lua" in a for a in p.advice) and any("WATCH" in a for a in p.advice)


def test_race_found_when_replies_come_out_of_execution_order():
    """B's GET ran before A's SET but its reply record came after it (one event-loop round)."""
    w = Wire()
    w(0, 1, "GET", "stock:1")
    w(2, 1, "SET", "stock:1")
    w(1, 2, "GET", "stock:1")
    w(3, 2, "SET", "stock:1")
    assert [p.count for p in w.kinds("race")] == [1]


@pytest.mark.parametrize("case", ["sequential", "multi", "lua", "pipelined", "cache fill", "other command between",
                                  "one client", "plain writer", "lost reads"])
def test_race_near_misses(case):
    w = Wire()
    for round_ in range(5):
        t = round_ * 100
        if case == "sequential":            # A finishes before B reads
            w(t, 1, "GET", "stock:1")
            w(t + 1, 1, "DECRBY", "stock:1")
            w(t + 2, 2, "GET", "stock:1")
            w(t + 3, 2, "DECRBY", "stock:1")
        elif case == "multi":               # WATCH/GET/MULTI/DECRBY/EXEC each
            for c, off in ((1, 0), (2, 0.5)):
                w(t + off, c, "WATCH", "stock:1")
                w(t + off + 1, c, "GET", "stock:1")
            for c, off in ((1, 2), (2, 5)):
                w(t + off, c, "MULTI")
                w(t + off + 1, c, "DECRBY", "stock:1", reply="ok")
                w(t + off + 2, c, "EXEC")
        elif case == "lua":
            w(t, 1, "EVALSHA", "stock:1")
            w(t + 1, 2, "EVALSHA", "stock:1")
        elif case == "pipelined":           # the DECRBY was sent before the GET's reply: not derived from it
            w(t, 1, "GET", "stock:1")
            w(t + 1, 2, "GET", "stock:1")
            w(t + 2, 1, "DECRBY", "stock:1", sent_ms=t - 0.01)
            w(t + 3, 2, "DECRBY", "stock:1", sent_ms=t + 1 - 0.01)
        elif case == "cache fill":
            w(t, 1, "GET", "stock:1", reply="nil")
            w(t + 1, 2, "GET", "stock:1", reply="nil")
            w(t + 2, 1, "SET", "stock:1")
            w(t + 3, 2, "SET", "stock:1")
        elif case == "other command between":
            w(t, 1, "GET", "stock:1")
            w(t + 1, 2, "GET", "stock:1")
            w(t + 1.5, 1, "GET", "price:1")
            w(t + 1.6, 2, "PING")
            w(t + 2, 1, "DECRBY", "stock:1")
            w(t + 3, 2, "DECRBY", "stock:1")
        elif case == "one client":
            w(t, 1, "GET", "stock:1")
            w(t + 2, 1, "DECRBY", "stock:1")
        elif case == "lost reads":          # the records of the replies were lost: no value known to have come
            w(t, 1, "GET", "stock:1", reply="lost")
            w(t + 1, 2, "GET", "stock:1", reply="lost")
            w(t + 2, 1, "DECRBY", "stock:1")
            w(t + 3, 2, "DECRBY", "stock:1")
        else:                               # B overwrites without reading: last write wins, no derived value
            w(t, 1, "GET", "stock:1")
            w(t + 1, 2, "SET", "stock:1")
            w(t + 2, 1, "DECRBY", "stock:1")
    assert w.kinds("race") == []


# -- hot key -----------------------------------------------------------------------------------------------
def hot_traffic(w: Wire, hot_reads: int, hot_writes: int, others: int = 50, per_other: int = 20):
    t = 0.0
    for i in range(hot_reads):
        w(t, i % 5, "GET", "config:flags")
        t += 1
    for i in range(hot_writes):
        w(t, 0, "SET", "config:flags")
        t += 1
    for k in range(others):
        for _ in range(per_other):
            w(t, k % 5, "GET", f"user:{k}")
            t += 1
    return w


def test_hot_key_read_mostly_and_far_above_the_rest():
    (p,) = hot_traffic(Wire(), 2000, 50).kinds("hot-key")
    assert p.keys == ["config:flags"] and p.count == 2050
    assert p.figures["reads"] == 2000 and p.figures["writes"] == 50 and p.figures["read_write_ratio"] == 40
    assert p.figures["saved_requests"] == 1950
    assert any("CLIENT TRACKING" in a and "Caffeine" in a for a in p.advice)


@pytest.mark.parametrize("case", ["uniform", "written as often as read", "small"])
def test_hot_key_near_misses(case):
    w = Wire()
    if case == "uniform":
        hot_traffic(w, 100, 0, others=50, per_other=100)
    elif case == "written as often as read":
        hot_traffic(w, 1000, 1000)
    else:
        hot_traffic(w, 300, 0, others=5, per_other=2)
    assert w.kinds("hot-key") == []


# -- big value ---------------------------------------------------------------------------------------------
def test_big_value_read_often():
    w = Wire()
    for i in range(100):
        w(i * 10, i % 3, "GET", "page:home", reply_bytes=200_000)
        w(i * 10 + 1, 0, "GET", "page:about", reply_bytes=300_000 if i < 3 else 300)
    (p,) = w.kinds("big-value")
    assert p.keys == ["page:home"] and p.count == 100 and p.figures["bytes"] == 20_000_000
    assert any("compress" in a for a in p.advice)


# -- the whole --------------------------------------------------------------------------------------------
def test_bounded_table_evicts_least_recent_and_counts():
    b = Bounded(3)
    for k in "abc":
        b.put(k, 1)
    b.touch("a")
    b.put("d", 1)
    assert list(b) == ["c", "a", "d"]
    assert "b" not in b and b.evicted == 1


def test_detector_state_stays_bounded_under_many_keys():
    w = Wire(PatternOptions(max_keys=100, max_clients=10))
    for i in range(5000):
        w(i, i % 50, "GET", f"k:{i}", reply="nil" if i % 2 else "ok")
        w(i + 0.5, i % 50, "SET", f"k:{i}")
    d = w.detectors
    assert len(d.stampede.episodes) <= 100 and len(d.penetration.missing) <= 100
    assert len(d.race.clients) <= 10 and len(d.race.last_rmw) <= 100 and len(d.avalanche.set_at) <= 100
    assert d.race.clients.evicted > 0


def test_key_prefixes():
    assert [key_prefix(k) for k in ("user:123", "a:b:c", "item42", "plain")] == ["user:*", "a:b:*", "item*", "plain"]


def test_report_json_carries_patterns_and_reads_them_back():
    a = Analyzer()
    w = Wire()
    w.detectors = a.patterns
    stampede(w, clients=6, spacing_ms=1)
    doc = json.loads(json.dumps(a.report({"pid": 1}).to_json()))
    (p,) = doc["patterns"]
    assert set(p) >= {"kind", "keys", "clients", "window_ms", "count", "evidence", "advice", "input"}
    assert p["kind"] == "stampede" and p["figures"]["missing_clients"] == 6
    assert Report.from_json(doc).patterns[0] == Pattern.from_json(p)


def test_hot_key_counts_the_invalidations_pushed_per_key():
    """CLIENT TRACKING: the invalidation pushes naming the hot key, and to how many tracking clients."""
    w = hot_traffic(Wire(), 2000, 50)
    for i in range(120):
        w.detectors.on_invalidate(Invalidation(1, f"127.0.0.1:{60000 + i % 3}", ["config:flags"], T0 + i * MS))
    w.detectors.on_invalidate(Invalidation(1, "127.0.0.1:60000", ["user:1", "config:flags"], T0))
    (p,) = w.kinds("hot-key")
    assert p.figures["invalidations"] == 121 and p.figures["invalidated_clients"] == 3
    assert "config:flags: 121 invalidations pushed to 3 tracking clients" in p.evidence
    assert w.detectors.hot_key.invalidated["user:1"].pushes == 1


def test_hot_key_without_invalidations_has_no_such_figures():
    (p,) = hot_traffic(Wire(), 2000, 50).kinds("hot-key")
    assert "invalidations" not in p.figures and not any("invalidations" in e for e in p.evidence)


def test_avalanche_corroborated_by_info_expired_keys():
    """INFO samples around the burst's second: the growth of expired_keys is evidence; samples that do not
    bracket the second, or a counter that went back (a restart), add nothing."""
    from tracer.kernel.info import InfoAt, InfoSample

    def run(samples):
        w = Wire()
        for i in range(50):
            w(i, 0, "SET", f"sku:{i}")
        for ts_ms, n in samples:
            w.detectors.on_info(InfoAt(1, T0 + int(ts_ms * MS), InfoSample(expired_keys=n)))
        for i in range(50):
            w(60_000 + i * 5, 1, "GET", f"sku:{i}", reply="nil")
        (p,) = w.kinds("avalanche")
        return p

    burst_second_ms = (T0 + 60_000 * MS) // 1_000_000_000 * 1000 - T0 // MS
    p = run([(0, 3), (burst_second_ms - 500, 10), (burst_second_ms + 1500, 2010), (burst_second_ms + 3500, 2020)])
    assert p.figures["info_expired_keys"] == 2000 and p.figures["info_window_s"] == 2.0
    assert "INFO: 2,000 keys expired in the 2.0 s around that second" in p.evidence
    # a trace that stops right after the burst: its last sample, after the misses, still counts them
    p = run([(burst_second_ms - 500, 10), (burst_second_ms + 300, 60)])
    assert p.figures["info_expired_keys"] == 50 and p.figures["info_window_s"] == 0.8
    for samples in ([(0, 3)], [(burst_second_ms + 1500, 5)], [(0, 3000), (burst_second_ms + 1500, 5)],
                    [(0, 3), (burst_second_ms + 100, 20)]):      # the last: before the last miss
        p = run(samples)
        assert "info_expired_keys" not in p.figures and not any(e.startswith("INFO") for e in p.evidence)
