"""Stall detection, culprits, victims and classification on synthetic event streams (no root)."""
from __future__ import annotations

import pytest

from tracer.analyze.analysis import Analyzer
from tracer.analyze.diagnosis import StallDetector
from tracer.analyze.stall_classes import command_class
from tracer.stitch.model import BusySpan, FileSync, Request

PID = 4242
US = 1_000
MS = 1_000_000
S = 1_000_000_000
T0 = 100 * S


def mkreq(conn, command, key=None, *, arrival=0, wake=0, read_start, read_end=None, exec_start=None,
          exec_ns=5 * US, exec_end=None, reply_start=None, reply_end=None, reply_bytes=5, client=None,
          thread=PID, batch=1, timed=True):
    r = Request()
    r.tgid = PID
    r.conn_id = conn
    r.fd = 10 + conn
    r.client = client or f"10.0.0.{conn}:{40000 + conn}"
    r.thread = thread
    r.reply_thread = PID
    r.command = command
    r.key = key
    r.argc = 2
    r.arrival_ts = arrival
    r.wake_ts = wake
    r.read_start_ts = read_start
    r.read_end_ts = read_end if read_end is not None else read_start + 2 * US
    if timed:
        r.exec_start_ts = exec_start if exec_start is not None else r.read_end_ts
        r.exec_end_ts = exec_end if exec_end is not None else r.exec_start_ts + exec_ns
    r.reply_start_ts = reply_start if reply_start is not None else (r.exec_end_ts or r.read_end_ts) + 3 * US
    r.reply_end_ts = reply_end if reply_end is not None else r.reply_start_ts + 4 * US
    r.reply_bytes = reply_bytes
    r.reply_type = "ok"
    r.batch = batch
    return r


def emit_ts(item) -> int:
    if isinstance(item, Request):
        return item.reply_end_ts or item.read_end_ts
    return item.end_ts


def feed(target, items) -> None:
    """Feed in the stitcher's emission order: requests at their reply, spans at the next epoll entry."""
    for item in sorted(items, key=emit_ts):
        if isinstance(item, Request):
            target.on_request(item)
        elif isinstance(item, BusySpan):
            target.on_busy(item)
        else:
            target.on_sync(item)


def bigkey_del_scenario(same_iteration_victim=False):
    """DEL of a big hash on conn 1 runs 1.2 s; 30 GETs from conns 2..11 arrive during it."""
    items = []
    start = T0
    delete = mkreq(1, "DEL", "big:hash", arrival=start - 50 * US, wake=start, read_start=start + 10 * US,
                   exec_ns=1200 * MS, client="10.0.0.1:5001", reply_bytes=4)
    items.append(delete)
    end = delete.reply_end_ts + 20 * US
    if same_iteration_victim:   # read in the same loop iteration, after the DEL
        g = mkreq(20, "GET", "k20", arrival=start - 20 * US, wake=start, read_start=delete.exec_end_ts + 1 * US)
        items.append(g)
        end = max(end, g.reply_end_ts + 5 * US)
    items.append(BusySpan(PID, start, end))
    arrivals = []
    for i in range(30):
        arr = start + 100 * MS + i * 30 * MS
        arrivals.append(arr)
        conn = 2 + i % 10
        rs = end + 20 * US + i * 10 * US
        items.append(mkreq(conn, "GET", f"user:{i}", arrival=arr, wake=end + 10 * US, read_start=rs))
    # normal traffic before and after: short loop iterations only
    for i in range(200):
        t = start - 2 * S + i * 5 * MS
        items.append(mkreq(30 + i % 5, "SET", f"n:{i}", arrival=t, wake=t + 5 * US, read_start=t + 10 * US))
        items.append(BusySpan(PID, t + 5 * US, t + 5 * US + 2 * MS))
    expected_added = [end - a for a in arrivals]
    return items, delete, start, end, expected_added


def test_bigkey_del_stall_culprit_and_victims():
    items, delete, start, end, added = bigkey_del_scenario()
    an = Analyzer(stall_ms=50)
    feed(an, items)
    an.finish()
    stalls = an.report({"pid": PID, "port": 6379, "redis_version": "7.2.4"}, clock_first_ts=T0 - 3 * S).stalls
    assert len(stalls) == 1
    st = stalls[0]
    assert st.class_ == "bigkey"
    assert st.command == "DEL"
    assert st.key == "big:hash"
    assert st.client == "10.0.0.1:5001"
    assert st.victims == 30
    assert st.duration_ms == pytest.approx((end - start) / MS, abs=1e-3)
    assert st.start_s == pytest.approx(3.0, abs=1e-3)
    assert st.victim_added_ms == pytest.approx(max(added) / MS, abs=1e-3)
    assert st.victim_added_total_ms == pytest.approx(sum(added) / MS, abs=1e-2)
    assert st.victim_added_mean_ms == pytest.approx(sum(added) / 30 / MS, abs=1e-2)
    assert any("DEL key 'big:hash'" in e and "1200 ms" in e for e in st.evidence)
    assert any("UNLINK" in a for a in st.advice)
    assert st.culprits[0].command == "DEL" and st.culprits[0].exec_ms == pytest.approx(1200.0)


def test_same_iteration_request_after_culprit_is_a_victim():
    items, delete, start, end, added = bigkey_del_scenario(same_iteration_victim=True)
    det = StallDetector(stall_ms=50)
    feed(det, items)
    det.finish()
    (st,) = det.results()
    assert st.victims == 31
    assert st.command == "DEL"
    # the same-iteration GET waited exactly the DEL's execution
    assert st.victim_added_ms == pytest.approx(max(max(added), delete.exec_ns) / MS, abs=1e-3)


def test_culprit_reported_after_the_span_record_is_still_joined():
    """Order should not matter within the join window: the DEL's reply arrives after LOOP."""
    items, delete, start, end, _ = bigkey_del_scenario()
    a = StallDetector(stall_ms=50)
    feed(a, items)
    a.finish()
    b = StallDetector(stall_ms=50)
    span = next(i for i in items if isinstance(i, BusySpan) and i.start_ts == start)
    rest = [i for i in items if i is not span and i is not delete]
    for item in sorted(rest, key=emit_ts):
        if emit_ts(item) > end:
            break
        (b.on_request if isinstance(item, Request) else b.on_busy)(item)
    b.on_busy(span)
    b.on_request(delete)    # late
    for item in sorted(rest, key=emit_ts):
        if emit_ts(item) > end:
            (b.on_request if isinstance(item, Request) else b.on_busy)(item)
    b.finish()
    assert a.results() == b.results()


def test_stall_stays_open_until_join_window_passes():
    items, delete, start, end, _ = bigkey_del_scenario()
    det = StallDetector(stall_ms=50)
    feed(det, items)
    assert len(det.open) == 1 and not det.done      # victims may still come
    late = mkreq(99, "PING", None, arrival=end + 2 * S + MS, read_start=end + 2 * S + 2 * MS)
    det.on_request(late)
    assert not det.open and len(det.done) == 1
    assert det.done[0].victims == 30


def test_lua_stall():
    start = T0
    ev = mkreq(3, "EVALSHA", None, arrival=start - 10 * US, wake=start, read_start=start + 5 * US, exec_ns=300 * MS)
    items = [ev, BusySpan(PID, start, ev.reply_end_ts + 10 * US)]
    victim = mkreq(4, "GET", "a", arrival=start + 150 * MS, wake=ev.reply_end_ts + 20 * US,
                   read_start=ev.reply_end_ts + 30 * US)
    items.append(victim)
    det = StallDetector(stall_ms=50)
    feed(det, items)
    det.finish()
    (st,) = det.results()
    assert st.class_ == "lua" and st.command == "EVALSHA"
    assert st.victims == 1
    assert st.victim_added_ms == pytest.approx((ev.reply_end_ts + 10 * US - start - 150 * MS) / MS, abs=1e-3)
    assert any("lua-time-limit" in a or "busy-reply-threshold" in a for a in st.advice)


def test_keys_is_keyspace():
    start = T0
    k = mkreq(5, "KEYS", "*", wake=start, read_start=start + 5 * US, exec_ns=200 * MS, reply_bytes=300_000)
    det = StallDetector()
    feed(det, [k, BusySpan(PID, start, k.reply_end_ts + 5 * US)])
    det.finish()
    (st,) = det.results()
    assert st.class_ == "keyspace" and st.command == "KEYS"
    assert any("SCAN" in a for a in st.advice)


def test_main_thread_fdatasync_is_aof():
    start = T0
    items = []
    for i in range(10):   # a few small writes executed before the flush
        items.append(mkreq(1, "SET", f"k{i}", wake=start, read_start=start + i * 20 * US))
    sync = FileSync(PID, PID, 7, "fdatasync", start + 1 * MS, start + 81 * MS)
    items += [sync, BusySpan(PID, start, start + 82 * MS)]
    det = StallDetector(stall_ms=50)
    feed(det, items)
    det.finish()
    (st,) = det.results()
    assert st.class_ == "aof"
    assert any("fdatasync on fd 7 took 80 ms" in e for e in st.evidence)
    assert any("appendfsync everysec" in a for a in st.advice)
    assert any("no-appendfsync-on-rewrite yes" in a for a in st.advice)


def test_background_fsync_does_not_make_aof():
    start = T0
    sync = FileSync(PID, PID + 3, 7, "fdatasync", start + 1 * MS, start + 81 * MS)   # bio thread
    det = StallDetector(stall_ms=50)
    feed(det, [sync, BusySpan(PID, start, start + 82 * MS)])
    det.finish()
    (st,) = det.results()
    assert st.class_ == "not-redis"
    assert any("background fdatasync" in e for e in st.evidence)


def test_busy_without_requests_is_not_redis():
    det = StallDetector(stall_ms=50)
    feed(det, [BusySpan(PID, T0, T0 + 120 * MS)])
    det.finish()
    (st,) = det.results()
    assert st.class_ == "not-redis"
    assert st.command == "" and st.key is None and st.victims == 0
    assert any("without a traced command: serverCron/expiry/eviction or off-CPU" in e for e in st.evidence)
    assert any("LATENCY DOCTOR" in a for a in st.advice)


def test_span_with_only_a_get_is_unknown_with_facts():
    start = T0
    g = mkreq(2, "GET", "x", wake=start, read_start=start + 10 * US, exec_ns=5 * US)
    det = StallDetector(stall_ms=50)
    feed(det, [g, BusySpan(PID, start, start + 70 * MS)])
    det.finish()
    (st,) = det.results()
    assert st.class_ == "unknown"
    assert st.command == "GET"   # the only command seen, reported as the fact it is
    text = " | ".join(st.evidence)
    assert "GET x1 (0.005 ms)" in text
    assert "69.995 ms of the 70 ms stall not accounted for" in text


def test_small_del_in_long_span_is_not_blamed():
    start = T0
    d = mkreq(2, "DEL", "small", wake=start, read_start=start + 10 * US, exec_ns=10 * US)
    det = StallDetector(stall_ms=50)
    feed(det, [d, BusySpan(PID, start, start + 60 * MS)])
    det.finish()
    (st,) = det.results()
    assert st.class_ == "unknown"


def test_big_reply_is_bigkey():
    start = T0
    g = mkreq(2, "GET", "blob", wake=start, read_start=start + 10 * US, exec_ns=40 * MS, reply_bytes=5_000_000)
    g.reply_start_ts = g.exec_end_ts + 1 * US
    g.reply_end_ts = g.reply_start_ts + 30 * MS
    det = StallDetector(stall_ms=50)
    feed(det, [g, BusySpan(PID, start, g.reply_end_ts + 1 * MS)])
    det.finish()
    (st,) = det.results()
    assert st.class_ == "bigkey"
    assert any("5.0 MB" in e for e in st.evidence)


def test_pipelined_inferred_batch_is_attributed_to_its_on_command():
    start = T0
    read_end = start + 20 * US
    exec_end = read_end + 900 * MS
    step = (exec_end - read_end) // 3
    batch = []
    for i, (cmd, key) in enumerate((("GET", "a"), ("HGETALL", "big"), ("GET", "b"))):
        r = mkreq(1, cmd, key, wake=start, read_start=start + 10 * US, read_end=read_end,
                  exec_start=read_end + i * step, exec_end=read_end + (i + 1) * step,
                  reply_start=exec_end + 10 * US, reply_end=exec_end + 20 * US, batch=3)
        batch.append(r)
    det = StallDetector(stall_ms=50)
    feed(det, batch + [BusySpan(PID, start, exec_end + 30 * US)])
    det.finish()
    (st,) = det.results()
    assert st.class_ == "bigkey" and st.command == "HGETALL" and st.key == "big"
    assert any("inferred for a pipelined batch of 3" in e for e in st.evidence)
    assert any("HSCAN" in a for a in st.advice)


def test_untimed_culprit_falls_back_to_latest_read_and_stays_unknown():
    start = T0
    a = mkreq(1, "GET", "a", wake=start, read_start=start + 10 * US, timed=False)
    d = mkreq(2, "DEL", "big", wake=start, read_start=start + 30 * US, timed=False)
    det = StallDetector(stall_ms=50)
    feed(det, [a, d, BusySpan(PID, start, start + 500 * MS)])
    det.finish()
    (st,) = det.results()
    assert st.command == "DEL"       # latest read in the span
    assert st.class_ == "unknown"     # no execution time: no guess
    assert any("not timed" in e for e in st.evidence)


def test_io_thread_reads_prevent_not_redis():
    start = T0
    r = mkreq(1, "GET", "a", wake=start, read_start=start + 10 * US, thread=PID + 1, timed=False,
              reply_start=start + 200 * MS)
    det = StallDetector(stall_ms=50)
    feed(det, [r, BusySpan(PID, start, start + 100 * MS)])
    det.finish()
    (st,) = det.results()
    assert st.class_ == "unknown"
    assert any("IO threads" in e for e in st.evidence)


def test_normal_traffic_has_no_stalls():
    an = Analyzer(stall_ms=50)
    items = []
    for i in range(5000):
        t = T0 + i * 200 * US
        items.append(mkreq(1 + i % 20, "GET", f"k{i % 50}", arrival=t, wake=t + 3 * US, read_start=t + 5 * US))
        if i % 10 == 0:
            items.append(BusySpan(PID, t + 3 * US, t + 3 * US + (1 + i % 49) * MS))
    feed(an, items)
    an.finish()
    rep = an.report({"pid": PID, "port": 6379, "redis_version": "7.2.4"})
    assert rep.stalls == []
    assert rep.requests == 5000
    assert an.snapshot().stalls == []


def test_other_process_spans_and_requests_do_not_mix():
    start = T0
    d = mkreq(1, "DEL", "big", wake=start, read_start=start + 10 * US, exec_ns=300 * MS)
    other = BusySpan(PID + 100, start, d.reply_end_ts + 1 * MS)
    det = StallDetector(stall_ms=50)
    feed(det, [d, other])
    det.finish()
    (st,) = det.results()
    assert st.class_ == "not-redis"


@pytest.mark.parametrize("command,key,cls", [
    ("DEL", "k", "bigkey"), ("UNLINK", "k", None), ("HGETALL", "h", "bigkey"), ("EVAL", None, "lua"),
    ("FCALL_RO", None, "lua"), ("KEYS", "*", "keyspace"), ("FLUSHALL", None, "keyspace"),
    ("FLUSHALL", "ASYNC", None), ("GET", "k", None), ("CONFIG GET", None, None),
])
def test_command_class(command, key, cls):
    r = mkreq(1, command, key, read_start=T0)
    assert command_class(r) == cls


def test_many_stalls_stay_bounded():
    det = StallDetector(stall_ms=50, max_stalls=100)
    for i in range(1000):
        s = T0 + i * 3 * S
        det.on_busy(BusySpan(PID, s, s + (51 + i % 400) * MS))
    det.finish()
    assert det.stalls_total == 1000
    assert len(det.done) <= 120
    res = det.results()
    assert len(res) == 100
    assert res[0].duration_ms == 450.0
    assert [r.duration_ms for r in res] == sorted((r.duration_ms for r in res), reverse=True)


def test_heavy_culprit_found_among_thousands_of_pipelined_commands():
    start = T0
    gets = []
    t = start + 10 * US
    for i in range(3000):     # a pipelining client: 3000 GETs of 2 us executed in the span first
        gets.append(mkreq(1, "GET", f"k{i}", wake=start, read_start=t, read_end=t + 1 * US, exec_ns=2 * US))
        t += 3 * US
    d = mkreq(2, "ZRANGE", "big:zset", wake=start, read_start=t, exec_ns=250 * MS, reply_bytes=2_000_000)
    for g in gets:            # their replies are written in beforeSleep, after the ZRANGE
        g.reply_start_ts = d.reply_end_ts + 1 * US
        g.reply_end_ts = g.reply_start_ts + 1 * US
    end = d.reply_end_ts + 20 * US
    det = StallDetector(stall_ms=50)
    feed(det, gets + [d, BusySpan(PID, start, end)])
    det.finish()
    (st,) = det.results()
    assert st.class_ == "bigkey" and st.command == "ZRANGE" and st.key == "big:zset"
    assert any("2.0 MB" in e for e in st.evidence)
    # conn 1's GETs executed before the ZRANGE but were answered after it: they waited on it.
    # Only the first MAX_INSPAN requests of a stall are kept individually; the rest are aggregated.
    assert 1999 <= st.victims <= 2000
    assert st.victim_added_ms == pytest.approx(250.0, abs=0.01)
