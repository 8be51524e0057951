"""The engine's user-space side without BPF: its map layouts agree with probes/engine.c, the
log-linear histogram's buckets and percentiles, the command table, REQ records, the raw counter."""
from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from tracer.kernel import events
from tracer.engine import histogram, layout
from tracer.engine.commands import OTHER, OVERFLOW, SECRET_COMMANDS, build_table
from tracer.engine.raw import RawCounter
from tracer.engine.records import decode_request, is_request
from tracer.engine.feed import to_request

ENGINE_C = (Path(__file__).resolve().parent.parent / "probes" / "engine.c").read_text()


def _define(name: str) -> int:
    return int(re.search(r"#define %s (\d+)" % name, ENGINE_C).group(1))


def _struct_fields(name: str) -> list[str]:
    body = re.search(r"struct %s \{(.*?)\};" % name, ENGINE_C, re.S).group(1)
    names = []
    for line in body.splitlines():
        line = line.split("/*")[0].strip().rstrip(";")
        if line:
            names += [n.strip().split("[")[0] for n in line.split(None, 1)[1].split(",")]
    return names


def test_layout_mirrors_engine_c():
    assert _define("ENG_SLOTS") == layout.SLOTS
    assert _define("ENG_NCMD") == layout.NCMD
    assert _define("ENG_NB") == layout.NBUCKETS
    assert _define("ENG_PHASES") == layout.PHASES == len(layout.PHASE_NAMES)
    assert _define("ENG_NAME") == layout.NAME_LEN
    assert _define("ENG_SUB_BITS") == histogram.SUB_BITS
    assert _struct_fields("eng_cmd_stats") == list(layout.CMD_STATS_FIELDS) + ["buckets"]
    assert _struct_fields("eng_phase_stats") == list(layout.PHASE_STATS_FIELDS) + ["buckets"]
    body = re.search(r"enum eng_counter \{(.*?)\};", ENGINE_C, re.S).group(1)
    counters = {k: int(v) for k, v in re.findall(r"(ECNT_\w+)\s*=\s*(\d+)", body)}
    assert counters["ECNT_MAX"] == layout.ECNT_MAX == len(layout.COUNTER_NAMES)
    for name, idx in counters.items():
        if name != "ECNT_MAX":
            assert layout.COUNTER_NAMES[idx] == name[len("ECNT_"):].lower()


def test_buckets_cover_every_value_once_and_are_at_most_a_sixteenth_wide():
    prev_hi = 0
    for idx in range(layout.NBUCKETS):
        lo, hi = histogram.bucket_bounds(idx)
        assert lo == prev_hi and hi > lo
        assert hi - lo <= max(1, lo // 16)
        prev_hi = hi
    assert histogram.bucket_index(histogram.MAX_NS) == layout.NBUCKETS - 1
    assert histogram.bucket_index(10 ** 15) == layout.NBUCKETS - 1     # clamped like the kernel
    for v in [0, 1, 31, 32, 33, 1000, 12345, 10 ** 6, 123456789, 2 ** 35 + 7]:
        lo, hi = histogram.bucket_bounds(histogram.bucket_index(v))
        assert lo <= v < hi


def test_percentiles_within_4_percent_of_exact():
    rng = random.Random(7)
    values = sorted(int(rng.lognormvariate(11, 1.2)) for _ in range(20000))   # ~60 us median, long tail
    buckets = [0] * layout.NBUCKETS
    for v in values:
        buckets[histogram.bucket_index(v)] += 1
    h = histogram.EngineHistogram(buckets)
    from tracer.analyze.histogram import nearest_rank

    for p in (50, 90, 99, 99.9):
        exact = values[nearest_rank(p, len(values)) - 1]
        assert abs(h.percentile(p) - exact) <= 0.04 * exact
    assert histogram.EngineHistogram().percentile(99) == 0


def test_command_table():
    table = build_table(["get", "set", "mycustomcmd", "client|list", "a-name-far-too-long-for-the-kernel"], "test")
    assert table.name(0) == OTHER and table.name(layout.CMD_OVERFLOW) == OVERFLOW
    assert table.name(table.ids["GET"]) == "GET" and "MYCUSTOMCMD" in table.ids
    assert not any("|" in n for n in table.names)
    assert len(table.names) <= layout.CMD_OVERFLOW
    entries = {raw.rstrip(b"\0").decode(): (cid, flags) for raw, cid, flags in table.kernel_entries()}
    assert all(len(raw) == layout.NAME_LEN for raw, _, _ in table.kernel_entries())
    assert entries["GET"] == (table.ids["GET"], 0)
    for secret in SECRET_COMMANDS:
        assert entries[secret][1] == layout.ECMD_SECRET


def _req(**kw):
    vals = {name: 0 for _, name in events.REQ_FIELDS}
    vals.update(kind=events.REQ, **kw)
    cap = kw.pop("captured", b"")
    vals.pop("captured", None)
    vals["cap_len"] = len(cap)
    return events.REQ_HEADER.pack(*(vals[name] for _, name in events.REQ_FIELDS)) + cap


def test_request_record_decodes():
    raw = _req(read_start=2000, write_end=9000, arrival_ts=1500, tgid=5, fd=9, cmd_id=3, ncmds=1,
               flags=events.RQF_SLOW, reply_type=events.RPL_NIL, captured=b"*2\r\n$3\r\nGET\r\n$1\r\nk")
    assert is_request(raw)
    r = decode_request(raw)
    assert (r.tgid, r.fd, r.cmd_id, r.latency_ns, r.reply) == (5, 9, 3, 7500, "nil")
    assert r.captured.endswith(b"k")
    with pytest.raises(ValueError):
        decode_request(raw[:40])
    with pytest.raises(ValueError):
        decode_request(raw[:-1])


def test_bytes_stamped_while_their_read_was_under_way_arrived_at_the_read():
    """epoll can see a socket's bytes before sk_data_ready stamps them (49 of 60,000 SETs under CPU
    load): the arrival then lies inside the read. The request arrived at the read's start (no socket
    queue), as the kernel times it; it was left "arrival unknown" (the netns test's flake)."""
    inside = decode_request(_req(read_start=2000, read_end=2600, arrival_ts=2400, write_end=9000, ncmds=1))
    assert inside.arrival == 2000 and inside.latency_ns == 7000
    req = to_request(inside, "SET", "k", 1, None)
    assert req.to_json(_Clock())["arrival_known"] and req.socket_queue_ns == 0 and req.latency_ns == 7000
    later = decode_request(_req(read_start=2000, read_end=2600, arrival_ts=2700, write_end=9000, ncmds=1))
    assert later.arrival == 0 and to_request(later, "SET", "k", 1, None).arrival_ts == 0   # the next request's
    before = decode_request(_req(read_start=2000, read_end=2600, arrival_ts=1500, write_end=9000, ncmds=1))
    assert before.arrival == 1500 and to_request(before, "SET", "k", 1, None).socket_queue_ns == 500
    # a record without a read end (a CPU-starved victim's): an arrival before the read still counts
    assert decode_request(_req(read_start=2000, arrival_ts=1500, write_end=9000, ncmds=1)).arrival == 1500


class _Clock:
    def wall(self, ts):
        return ts / 1e9


def test_redirect_record_carries_the_reply_head_to_the_request():
    # a MOVED record names the slot and node, so the RedirectTracker can follow the client there
    cap = b"*2\r\n$3\r\nGET\r\n$1\r\nk"
    head = b"-MOVED 3999 127.0.0.1:7001\r\n".ljust(events.RQ_REDIRECT_LEN, b"\0")
    raw = _req(read_start=1, write_end=2, tgid=5, fd=9, ncmds=1, flags=events.RQF_SAMPLED | events.RQF_REDIRECT,
               reply_type=events.RPL_MOVED, captured=cap) + b"\0" * (events.RQ_CAP_ROOM - len(cap)) + head
    rec = decode_request(raw)
    assert rec.captured == cap and rec.redirect == b"-MOVED 3999 127.0.0.1:7001"
    req = to_request(rec, "GET", "k", 1, "127.0.0.1:5000")
    assert (req.reply_type, req.reply_detail) == ("moved", "3999 127.0.0.1:7001")
    assert decode_request(_req(captured=cap)).redirect == b""


def test_request_records_are_named_as_the_full_path_names_them():
    from tracer.engine.feed import captured_arg_bytes, named

    assert named(captured_arg_bytes(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP")) == ("DEBUG SLEEP", None)
    assert named(captured_arg_bytes(b"*2\r\n$3\r\nget\r\n$3\r\nabc")) == ("GET", "abc")
    assert named(captured_arg_bytes(b"*2\r\n$4\r\nECHO\r\n$3\r\nabc")) == ("ECHO", None)    # a value, no key
    assert named([]) == (None, None)


def _raw_read(fd, payload, flags=events.RTF_ENGINE_RAW):
    return events.encode(events.Event(kind=events.READ, tgid=5, tid=5, fd=fd, flags=flags, ret=len(payload),
                                      payload=payload))


def test_raw_counter_counts_inline_and_split_commands_per_connection():
    rc = RawCounter()
    rc.feed([_raw_read(7, b"PING\r\nset a 1\r\n*2\r\n$3\r\nGET\r\n$1"), _raw_read(8, b"GET x\r\n"),
             _raw_read(7, b"\r\na\r\n"), _raw_read(9, b"*1\r\n$4\r\nPING\r\n", flags=0)])  # not raw: the kernel's
    assert dict(rc.counts) == {(5, "PING"): 1, (5, "SET"): 1, (5, "GET"): 2}


def _snapshot(pid=5):
    from tracer.engine.snapshot import CommandStats, EngineSnapshot, InstanceStats

    def hist(values):
        buckets = [0] * layout.NBUCKETS
        for v in values:
            buckets[histogram.bucket_index(v)] += 1
        return histogram.EngineHistogram(buckets)

    get = CommandStats(name="GET", count=1000, done=1000, sum_ns=0, max_ns=900_000, bytes_in=0, bytes_out=0,
                       ok=1000, errors=0, nil=0, moved=0, ask=0, untyped=0,
                       histogram=hist([10_000 + i * 100 for i in range(1000)]))
    phases = {name: hist([1000] * 10) for name in layout.PHASE_NAMES}
    inst = InstanceStats(slot=0, pid=pid, commands={"GET": get}, phases=phases,
                         phase_sum_ns={name: 10_000 for name in layout.PHASE_NAMES})
    return EngineSnapshot(ts=0.0, instances={0: inst}, counters={"raw_reads": 3})


def test_aggregates_round_trip_through_an_engine_record():
    from tracer.engine import aggregates

    snap = _snapshot()
    (raw,) = aggregates.encode(snap, names=["(other)", "GET"], ts=123)
    ev = events.decode(raw)
    assert ev.kind == events.ENGINE and ev.tgid == 5 and ev.ts_exit == 123
    figures, names = aggregates.decode(ev)
    assert names == ["(other)", "GET"] and figures.counters == {"raw_reads": 3}
    fields, hist = figures.commands["GET"]
    assert fields["count"] == 1000 and fields["max_ns"] == 900_000
    assert hist.buckets == snap.instances[0].commands["GET"].histogram.buckets
    assert figures.phase_sum_ns["exec"] == 10_000 and figures.phases["wait"].count == 10
    import zlib

    for bad in (b"not zlib", zlib.compress(b"[1, 2]"), zlib.compress(b'{"commands": {"GET": "xyz"}}'),
                zlib.compress(b" " * (aggregates.MAX_DECODED + 1))):
        ev.payload = bad
        with pytest.raises(ValueError, match="damaged ENGINE record"):
            aggregates.decode(ev)


def test_captured_args_keep_only_whole_bulk_strings():
    from tracer.engine.feed import captured_args

    assert captured_args(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP") == ["DEBUG", "SLEEP"]
    assert captured_args(b"*2\r\n$3\r\nGET\r\n$10\r\nvictim-") == ["GET"]     # a cut key is no key
    assert captured_args(b"") == [] and captured_args(b"*1\r\n$x\r\n") == []


def test_engine_feed_puts_kernel_figures_into_the_views():
    from tracer.analyze.analysis import Analyzer
    from tracer.engine import aggregates
    from tracer.engine.feed import EngineFeed

    analyzer = Analyzer()
    feed = EngineFeed(analyzer.on_request)
    t0 = 10 ** 12
    for i, ts in enumerate((t0, t0 + 2_000_000_000)):
        snap = _snapshot()
        snap.instances[0].commands["GET"].count = 1000 * (i + 1)
        feed.on_aggregates(events.decode(aggregates.encode(snap, names=["(other)", "GET", "AUTH"], ts=ts)[0]))
    # a slow request record (AUTH carries no bytes: named from the table), and a raw inline PING
    req = feed.on_req(_req(read_start=t0, read_end=t0 + 1000, write_start=t0 + 5_000_000, write_end=t0 + 5_001_000,
                           tgid=5, fd=9, cmd_id=2, ncmds=1, flags=events.RQF_SLOW, reply_type=events.RPL_OK))
    assert req.command == "AUTH" and req.key is None and req.exec_ns == 4_999_000 and req.latency_ns == 5_001_000
    feed.flush()
    feed.on_raw_read(events.decode(_raw_read(7, b"PING\r\n")))
    s = analyzer.snapshot(t0 + 2_000_000_000)
    feed.apply_snapshot(s)
    assert s.mode == "engine" and s.requests == 2001 and s.commands["GET"].count == 2000
    assert s.commands["GET"].rps == 500.0 and s.rps == 500.0
    assert abs(s.commands["GET"].p50_us - 60.0) <= 0.04 * 60 and s.commands["PING"].count == 1
    assert s.phases_us_total == {name: 10.0 for name in layout.PHASE_NAMES}
    assert len(s.commands["GET"].spark) == 16 and sum(s.commands["GET"].spark) == 1000   # the histogram's values
    assert [r.command for r in s.slowest] == ["AUTH"]
    report = analyzer.report({"pid": 5, "port": 1})
    feed.apply_report(report)
    assert report.mode == "engine" and report.requests == 2001 and list(report.commands) == ["GET", "PING"]
    assert report.to_json()["commands"]["GET"]["count"] == 2000


def test_raw_counter_masks_and_skips_a_connection_handed_over_inside_a_frame():
    """The kernel leaves a connection to user space where its parse stopped, possibly inside a frame:
    the bytes before the next request start are masked, never counted as commands."""
    from tracer.decode.redact import redact_spans

    tail = b"\r\n$26\r\ntopsecret-value-0123456789\r\n$8\r\nfield:25\r\n$26\r\ntopsecret-value-0123456789\r\n"
    rc = RawCounter()
    kept = []
    for payload in (tail, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9\r\ntopsecret\r\nPING\r\n"):
        ev = events.decode(_raw_read(7, payload))
        kept.append(redact_spans(ev.payload, rc.feed_event(ev)))
    assert all(b"topsecret" not in k for k in kept), kept
    assert dict(rc.counts) == {(5, "SET"): 1, (5, "PING"): 1}


def test_engine_feed_figures_per_instance_for_the_nodes_panel():
    from tracer.engine import aggregates
    from tracer.engine.feed import EngineFeed

    feed = EngineFeed(lambda req: None)
    for pid, ts in ((5, 10 ** 12), (6, 10 ** 12), (5, 10 ** 12 + 10 ** 9)):
        snap = _snapshot(pid)
        snap.instances[0].commands["GET"].count = 1000 * pid + (ts - 10 ** 12) // 10 ** 6
        feed.on_aggregates(events.decode(aggregates.encode(snap, ts=ts)[0]))
    requests, rps, p99_us = feed.node_figures(5)
    assert requests == 6000 and rps == 1000.0 and abs(p99_us - 109.0) <= 0.04 * 109
    assert feed.node_figures(6)[:2] == (6000, 0.0) and feed.node_figures(7) == (0, 0.0, None)


def test_execution_ends_where_the_next_read_begins():
    """A GET read just before a 200 ms DEL in the same loop iteration has its reply written after the
    DEL too: read end → reply start would make it the longest execution; the next read cuts it."""
    from tracer.engine.feed import EngineFeed

    got = []
    feed = EngineFeed(got.append)
    t0, ms = 10 ** 12, 10 ** 6
    for fd, name, read_start in ((9, b"GET", t0), (10, b"DEL", t0 + ms // 100)):
        key = b"k" if name == b"GET" else b"big:hash"
        feed.on_req(_req(read_start=read_start, read_end=read_start + 2000, write_start=t0 + 200 * ms,
                         write_end=t0 + 200 * ms + 5000, tgid=5, fd=fd, cmd_id=1, ncmds=1, flags=events.RQF_STALL,
                         captured=b"*2\r\n$3\r\n" + name + b"\r\n$%d\r\n" % len(key) + key))
    assert not got                  # held until the batch ends
    feed.flush()
    get, delete = got
    assert get.exec_ns == delete.read_start_ts - get.read_end_ts == ms // 100 - 2000
    assert delete.exec_ns == 200 * ms - ms // 100 - 2000 and delete.key == "big:hash"


def test_engine_pipeline_keeps_stream_order_for_held_requests():
    """REQ records are held while they follow each other; the next record of another kind (here the
    connection's CLOSE) comes after them, so a closed connection is not left counted as open."""
    from tracer.runtime.pipeline import Pipeline

    t0, fd = 10 ** 12, 9
    accept = events.encode(events.Event(kind=events.ACCEPT, tgid=5, tid=5, fd=fd, ret=fd, ts_enter=t0, ts_exit=t0))
    req = _req(read_start=t0 + 1000, read_end=t0 + 2000, write_start=t0 + 3000, write_end=t0 + 4000, tgid=5, fd=fd,
               tid=5, cmd_id=1, ncmds=1, flags=events.RQF_SAMPLED, captured=b"*2\r\n$3\r\nGET\r\n$1\r\nk")
    close = events.encode(events.Event(kind=events.CLOSE, tgid=5, tid=5, fd=fd, ts_enter=t0 + 5000, ts_exit=t0 + 5000))
    pipeline = Pipeline(engine=True, targets=[{"pid": 5}])
    pipeline.feed([accept, req, close])
    snap = pipeline.snapshot()
    assert snap.connections.accepted == 1 and snap.connections.closed == 1 and snap.connections.open == 0
    assert [r.command for r in snap.slowest] == ["GET"] and snap.hot_keys == [("k", 1)]


def test_a_raw_read_cuts_the_execution_of_requests_read_before_it():
    # demo: a GET read just before a slow DEL on a connection the kernel left to user space (no REQ
    # record for the DEL) was taken for the stall's culprit: both replies are written after the DEL
    from tracer.engine.feed import infer_execution
    from tracer.stitch.model import Request

    get = Request()
    get.read_start_ts, get.read_end_ts, get.exec_start_ts, get.exec_end_ts = 100, 110, 110, 412_000_000
    infer_execution([get], other_reads=[50, 200])
    assert get.exec_end_ts == 200
    alone = Request()
    alone.read_start_ts, alone.read_end_ts, alone.exec_start_ts, alone.exec_end_ts = 100, 110, 110, 5000
    infer_execution([alone])
    assert alone.exec_end_ts == 5000


def test_raw_path_requests_are_timed_with_the_kernels_buckets_and_phases():
    """Requests stitched from a connection the kernel left to user space get percentiles, phases and
    the agent's histograms: without them a command seen only there showed p50/p99/max 0 µs."""
    from tracer.agent.figures import InstanceTotals
    from tracer.engine.feed import EngineFeed
    from tracer.stitch.model import Request

    feed = EngineFeed(lambda req: None)
    feed.on_raw_read(events.decode(_raw_read(7, b"*2\r\n$7\r\nEVALSHA\r\n$1\r\n0\r\n" * 2)))
    for i, (latency, name) in enumerate(((250_000_000, "EVALSHA"), (240_000_000, "evalsha"), (10_000, "DEBUG SLEEP"))):
        req = Request()
        req.tgid, req.fd, req.command = 5, 7, name
        t0 = 10 ** 12 + i * 10 ** 9
        req.arrival_ts, req.wake_ts, req.read_start_ts, req.read_end_ts = t0, t0 + 1000, t0 + 3000, t0 + 4000
        req.reply_start_ts, req.reply_end_ts = t0 + latency - 2000, t0 + latency
        feed.on_raw_request(req)
    unanswered = Request()
    unanswered.tgid, unanswered.command, unanswered.read_start_ts = 5, "GET", 10 ** 12
    feed.on_raw_request(unanswered)        # counted by the reads, never timed
    rows = feed.command_rows()
    assert rows["EVALSHA"].count == 2
    assert abs(rows["EVALSHA"].p50_us - 240_000) <= 0.04 * 240_000 and rows["EVALSHA"].max_us == 250_000.0
    assert rows["DEBUG"].count == 0 and rows["DEBUG"].p99_us > 0 and "GET" not in rows
    phases = feed.phases_us()
    assert phases["socket_queue"] == 3.0 and phases["wait"] == 6.0 and phases["reply_write"] == 6.0
    assert feed.phase_histograms()["exec"].count == 3 and feed.command_rows(pids={6}) == {}
    totals = InstanceTotals()
    totals.add_engine(None, {"EVALSHA": 2}, feed.raw_latencies.of(5))
    assert totals.commands["EVALSHA"].requests == 2 and totals.commands["EVALSHA"].latency.count == 2
    assert totals.commands["EVALSHA"].latency.sum_ns == 490_000_000 and totals.phases["wait"].count == 3
