"""Victims pointing to their stall (blocked_by), the Chrome export's arrows, Redis's own evidence and the sched
records, on the recorded fixture and hand-made records. Root-free."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tracer.analyze.blocked_by import StallTracker
from tracer.analyze.diagnosis import StallDetector, format_stall
from tracer.analyze.redis_evidence import RedisEvidence
from tracer.decode.redis_log import RedisLog, SlowEntry, redis_log_of, redis_log_record, slow_entry
from tracer.kernel import events
from tracer.kernel.info import InfoAt, InfoSample
from tracer.runtime import offline
from tracer.stitch.model import BusySpan
from tracer.stitch.sched_items import Fork, OffCpu, RunSlice, sched_item
from tracer.stitch.stitcher import Stitcher

REPO = Path(__file__).resolve().parent.parent
SINGLE = REPO / "tests" / "fixtures" / "single.rtrace"
MS = 1_000_000


def test_slowest_requests_point_to_the_stall_that_delayed_them():
    _, pipeline = offline.analyse(str(SINGLE))
    snap = pipeline.snapshot()
    blocked = [r for r in snap.slowest if r.blocked_by]
    assert [(r.command, r.blocked_by) for r in blocked] == \
        [("GET", {"id": 0, "culprit": "DEL big:set", "class": "bigkey"})]
    assert not any(r.command == "DEL" and r.blocked_by for r in snap.slowest)     # the culprit is no victim
    assert snap.stalls[0].id == 0


def test_trace_json_names_the_stall_of_a_victim():
    """`trace` has no Analyzer: its StallTracker, fed by the stitcher as trace.py wires it."""
    blocked = {}
    tracker = StallTracker(50.0)

    def emit(req):
        b = tracker.of(req)
        if b is not None:
            blocked[(req.command, req.key)] = b

    stitcher = Stitcher(on_request=emit, on_busy=tracker.on_busy, on_sync=tracker.on_sync,
                        on_sched=tracker.on_sched)
    stitcher.feed_raw(list(offline.open_trace(str(SINGLE)).records()))
    stitcher.finish()
    assert list(blocked.values()) == [{"id": 0, "culprit": "DEL big:set", "class": "bigkey"}]
    assert next(iter(blocked))[0] == "GET"


def test_chrome_export_draws_an_arrow_from_the_stall_to_each_victim(tmp_path):
    out = tmp_path / "c.json"
    subprocess.run([sys.executable, "-m", "tracer", "export", str(SINGLE), "--format", "chrome", "-o", str(out)],
                   cwd=REPO, check=True, capture_output=True)
    evs = json.loads(out.read_text())["traceEvents"]
    starts = [e for e in evs if e.get("ph") == "s"]
    ends = [e for e in evs if e.get("ph") == "f"]
    assert len(starts) == len(ends) == 1 and starts[0]["id"] == ends[0]["id"] and ends[0]["bp"] == "e"
    stall = next(e for e in evs if e.get("cat") == "stall")
    assert stall["ts"] <= starts[0]["ts"] <= stall["ts"] + stall["dur"] and starts[0]["tid"] == stall["tid"]
    victim = next(e for e in evs if e.get("cat") == "request" and e["tid"] == ends[0]["tid"]
                  and e["ts"] <= ends[0]["ts"] <= e["ts"] + e["dur"] and e["dur"] > 100_000)
    assert victim["name"].startswith("GET")


def test_slowlog_entries_keep_the_command_and_key_never_values():
    to_mono = lambda unix_s: int(unix_s * 1e9)     # noqa: E731
    e = slow_entry({"start_time": 100, "duration": 2500, "command": b"SET user:1 secret-value EX 10",
                    "client_address": b"127.0.0.1:5000"}, to_mono)
    assert (e.command, e.key, e.duration_us, e.client) == ("SET", "user:1", 2500, "127.0.0.1:5000")
    assert "secret" not in repr(e)
    auth = slow_entry({"start_time": 1, "duration": 1, "command": b"AUTH (redacted)"}, to_mono)
    assert auth.key is None
    renamed = slow_entry({"start_time": 1, "duration": 1, "command": b"MYSTERY a b"}, to_mono)
    assert (renamed.command, renamed.key) == ("?", None)
    log = RedisLog(tgid=7, ts=5, slowlog=[e], latency_threshold_ms=0)
    assert redis_log_of(events.decode(redis_log_record(log))) == log
    for payload in (b"{not json", b'{"slowlog": [{"ts": "x"}]}', b'{"latency": [{"event": 1, "ts": [], '
                    b'"latest_ms": 1, "max_ms": 2}]}', b"[]"):
        bad = redis_log_of(events.decode(events.encode(events.Event(kind=events.REDIS, tgid=7, payload=payload))))
        assert bad.notes and not bad.slowlog and not bad.latency


def _fork_stall(fork_ms: float, latest_fork_usec: int, slowlog=()):
    det = StallDetector(10.0)
    det.on_sched(Fork(7, 100 * MS, int((100 + fork_ms) * MS), 99, 600 << 20, "redis-rdb-bgsave 127.0.0.1:6379"))
    det.on_busy(BusySpan(7, 99 * MS, int((101 + fork_ms) * MS)))
    det.finish()
    (v,) = det.results()
    redis = RedisEvidence()
    redis.on_info(InfoAt(7, 50 * MS, InfoSample(latest_fork_usec=0, expired_keys=5)))
    redis.on_info(InfoAt(7, 500 * MS, InfoSample(latest_fork_usec=latest_fork_usec, expired_keys=9)))
    redis.on_log(RedisLog(tgid=7, ts=600 * MS, slowlog=list(slowlog), latency_threshold_ms=0))
    return v, format_stall(v, 0, redis=redis.for_stall(v))


def test_a_fork_stall_and_redis_evidence_agree_or_disagree():
    v, s = _fork_stall(40.0, 41_000)
    assert s.class_ == "fork" and s.cause == "fork for BGSAVE" and not s.culprits
    assert s.offcpu["forks"] == [{"trigger": "BGSAVE", "child": 99, "ms": 40.0, "rss_bytes": 600 << 20}]
    assert any("latest_fork_usec 41.0 ms" in line for line in s.redis["agree"])
    assert any(line.startswith("SLOWLOG has no command") for line in s.redis["agree"])
    assert s.redis["info"]["expired_keys_delta"] == 4
    assert "LATENCY records nothing: latency-monitor-threshold is 0" in s.redis["notes"]
    _, s = _fork_stall(40.0, 90_000, slowlog=[SlowEntry(120 * MS, 38_000, "DEBUG", None, "")])
    assert any("latest_fork_usec 90.0 ms" in line for line in s.redis["disagree"])
    assert any(line.startswith("SLOWLOG DEBUG 38.0 ms") for line in s.redis["disagree"])


def test_a_wait_for_the_cpu_in_epoll_wait_is_a_stall_naming_who_ran():
    det = StallDetector(50.0)
    det.on_sched(RunSlice(7, 100 * MS, 400 * MS, 4242, 4242, "hog", 1))
    det.on_sched(OffCpu(7, 10 * MS, 400 * MS, 100 * MS, 1, True, ""))     # asleep in epoll, woken at 100 ms
    det.finish()
    (v,) = det.results()
    assert v.class_ == "cpu-starved" and v.cause == "hog (pid 4242)" and v.found_by == "off-cpu"
    assert 300 <= v.duration_ms <= 300.3
    # asleep in epoll_wait and woken at once: idle, no stall
    det = StallDetector(50.0)
    det.on_sched(OffCpu(7, 10 * MS, 400 * MS, 399_900_000, 1, True, ""))
    det.finish()
    assert det.results() == []


def test_a_busy_span_blocked_in_the_kernel_names_the_wait():
    det = StallDetector(50.0)
    det.on_sched(OffCpu(7, 110 * MS, 190 * MS, 189 * MS, 2, False, "do_syscall_64;filemap_fault;folio_wait_bit;schedule;__schedule;__traceiter_sched_switch"))
    det.on_busy(BusySpan(7, 100 * MS, 200 * MS, faults=12))
    det.finish()
    (v,) = det.results()
    assert v.class_ == "blocked" and v.cause == "folio_wait_bit <- filemap_fault <- do_syscall_64"
    assert any("uninterruptible (D)" in line for line in v.evidence)
    assert any(line.startswith("12 user page faults") for line in v.evidence)


def test_sched_records_read_back_as_items():
    off = events.Event(kind=events.OFFCPU, tgid=7, ts_enter=1, ts_exit=9, aux_ts=4, ret=1,
                       flags=events.SCF_IN_EPOLL | events.SCF_STACK, payload=b"a;b")
    assert sched_item(events.decode(events.encode(off))) == OffCpu(7, 1, 9, 4, 1, True, "a;b")
    runq = events.Event(kind=events.RUNQ, tgid=7, ts_enter=2, ts_exit=8, ret=55, aux_ts=56, fd=1,
                        payload=b"hog".ljust(16, b"\0"))
    assert sched_item(events.decode(events.encode(runq))) == RunSlice(7, 2, 8, 55, 56, "hog", 1)


def test_live_and_summary_show_a_cpu_starved_stall_and_its_victim():
    import copy
    import io

    from rich.console import Console

    from tracer.dashboards import live, plain
    from tracer.schema import Report, ScreenHeader, Snapshot

    blocked = {"id": 4, "culprit": "stress (pid 999)", "class": "cpu-starved"}
    stall = {"start_s": 1.0, "duration_ms": 900.0, "command": "", "key": None, "client": "", "victims": 1,
             "victim_added_ms": 899.0, "class": "cpu-starved", "id": 4, "cause": "stress (pid 999)",
             "evidence": ["main thread runnable but not running for 900.0 ms (100 % of the span); on its CPU ran "
                          "instead: stress (pid 999) 100 %"],
             "advice": ["stress (pid 999) took the CPU ..."],
             "redis": {"agree": ["SLOWLOG has no command in the stall: no command's execution took the time"],
                       "disagree": [], "notes": [], "info": {}, "latency": [], "slowlog": []}}
    slow = {"client": "127.0.0.1:5", "command": "GET", "key": "k", "latency_us": 900_000.0,
            "phases": [["socket_queue", 899_000.0], ["wait", 0.0], ["exec", 5.0], ["reply_write", 5.0]],
            "blocked_by": blocked}
    snap = Snapshot.from_json({"elapsed_s": 3.0, "requests": 10, "slowest": [slow], "stalls": [stall]})
    console = Console(file=io.StringIO(), width=160, height=40, force_terminal=False)
    console.print(live.Dashboard().render(snap, ScreenHeader.from_json({"title": "live"})))
    text = console.file.getvalue()
    assert "stress (pid 999)" in text and "cpu-starved" in text
    assert "← stall 4 cpu-starved: stress (pid 999)" in text
    report = Report.from_json({"duration_s": 3.0, "requests": 10, "stalls": [stall]})
    report.slowest = copy.deepcopy(snap.slowest)
    summary = " ".join(plain.final_summary(report).split())     # lines are wrapped to the terminal's width
    assert "900ms stress (pid 999)" in summary and "[cpu-starved]" in summary
    assert "redis agrees: SLOWLOG has no command" in summary
    assert "<- stall 4 [cpu-starved] stress (pid 999)" in summary


def test_trace_json_holds_a_victim_until_its_stall_is_known():
    """The busy span's LOOP record comes after the replies written in it: a victim handed on first
    had no stall to point to (CI: a 948 ms CPU-starved GET without blocked_by). VictimHold keeps it
    until the stall is known, up to its hold time; fast requests and known victims go at once."""
    from tracer.analyze.blocked_by import VictimHold
    from tracer.stitch.model import Request

    def req(cmd, start, end, exec_ns=0):
        r = Request()
        r.tgid, r.command, r.arrival_ts, r.read_start_ts, r.reply_end_ts = 7, cmd, start, start, end
        if exec_ns:
            r.exec_start_ts, r.exec_end_ts = start, start + exec_ns
        return r

    clock = [100.0]
    tracker = StallTracker(50.0)
    hold = VictimHold(tracker, hold_s=1.0, now=lambda: clock[0])
    t0 = 10 ** 12
    assert tracker.of(req("GET", t0 + 1 * MS, t0 + 200 * MS)) is None     # what trace.py did: too early
    assert hold.take(req("PING", t0, t0 + MS // 10)) == (True, None)        # too fast to be a victim
    victim = req("GET", t0 + 2 * MS, t0 + 201 * MS)
    assert hold.take(victim) == (False, None)
    assert hold.release() == []                     # nothing known yet, time not up
    tracker.on_busy(BusySpan(7, t0, t0 + 200 * MS))     # the LOOP record: a 200 ms stall
    released = hold.release()
    assert [r for r, _ in released] == [victim] and released[0][1]["id"] == 0
    lonely = req("GET", t0 + 10 ** 10, t0 + 10 ** 10 + 5 * MS)
    assert hold.take(lonely) == (False, None)
    clock[0] += 1.5
    assert hold.release() == [(lonely, None)]       # no stall came: printed after the hold time
    assert hold.take(req("GET", t0 + 3 * MS, t0 + 150 * MS))[0]     # the stall is known now: at once


def test_a_request_executing_through_a_cpu_starved_stall_is_its_victim():
    """A GET read just before a real-time hog took the CPU executes (read end → reply) through the
    whole wait: it made no stall, it suffered it (CI: the 948 ms GET had no blocked_by). A command
    executing through a stall of any other class is its culprit, not a victim."""
    from types import SimpleNamespace

    from tracer.analyze.blocked_by import blocking_verdict

    t0 = 10 ** 12
    starved = SimpleNamespace(tgid=7, start_ts=t0, end_ts=t0 + 900 * MS, class_="cpu-starved")
    bigkey = SimpleNamespace(tgid=7, start_ts=t0, end_ts=t0 + 900 * MS, class_="bigkey")
    start, end, exec_ns = t0 + MS, t0 + 901 * MS, 899 * MS
    assert blocking_verdict(7, start, end, [starved], exec_ns) is starved
    assert blocking_verdict(7, start, end, [bigkey], exec_ns) is None
    assert blocking_verdict(7, start, end, [bigkey], 0) is bigkey
