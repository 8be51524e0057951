"""On-CPU samples in the stall verdict (analyze/oncpu.py through analyze/diagnosis.py), on synthetic
streams (no root): the class comes from what the thread ran, and a command is culprit only when
the samples put the time in its execution."""
from __future__ import annotations

from test_diagnosis import MS, PID, T0, US, mkreq

from tracer.analyze.diagnosis import StallDetector
from tracer.kernel.stacks import StacksAt
from tracer.stitch.model import BusySpan

LOOP = "_start;main;aeMain;aeProcessEvents;beforeSleep"
EXPIRY = f"{LOOP};activeExpireCycle;deleteExpiredKeyAndPropagate;dictFreeUnlinkedEntry;decrRefCount;dictRelease;_dictClear"
DEL = "_start;main;aeMain;aeProcessEvents;readQueryFromClient;processCommand;call;delCommand;delGenericCommand;" \
      "dictFreeUnlinkedEntry;decrRefCount;dictRelease;_dictClear"


def expiry_after_a_get(stacks: dict | None):
    """The issue's case: a GET read at the span's start, its reply written after a 900 ms expiry, so its
    inferred execution (read end -> next syscall) covers the whole span. One stall verdict."""
    det = StallDetector(stall_ms=50)
    start, end = T0, T0 + 900 * MS
    get = mkreq(1, "GET", "k", wake=start, read_start=start + 5 * US, exec_end=end - 10 * US)
    det.on_request(get)
    det.on_busy(BusySpan(PID, start, end))
    if stacks is not None:
        det.on_stacks(StacksAt(PID, start, end, sum(stacks.values()), stacks))
    det.finish()
    (verdict,) = det.results()
    return verdict


def test_without_samples_the_inferred_get_is_blamed():
    v = expiry_after_a_get(None)
    assert v.command == "GET" and v.cpu is None     # what issue 15 reports: the samples fix it below


def test_samples_in_active_expiry_clear_the_get_and_class_the_stall_expiry():
    v = expiry_after_a_get({EXPIRY: 440, f"{EXPIRY};free": 10})
    assert v.class_ == "expiry"
    assert v.command == "" and v.culprits == []
    assert v.victims == 1 and v.victim_added_ms > 800      # the GET waited on the expiry: a victim
    assert any("GET is not the culprit" in e for e in v.evidence)
    assert any(e.startswith("on CPU: activeExpireCycle → … → dictRelease → _dictClear 100 %") for e in v.evidence)
    assert "lazyfree-lazy-expire" in v.advice[0]


def test_samples_under_call_keep_the_command_culprit():
    det = StallDetector(stall_ms=50)
    start, end = T0, T0 + 300 * MS
    det.on_request(mkreq(1, "DEL", "big", wake=start, read_start=start + 5 * US, exec_end=end - 10 * US))
    det.on_busy(BusySpan(PID, start, end))
    det.on_stacks(StacksAt(PID, start, end, 140, {DEL: 140}))
    det.finish()
    (v,) = det.results()
    assert v.class_ == "bigkey" and v.command == "DEL"
    assert v.cpu.paths[0].frames[:2] == ["delCommand", "delGenericCommand"]


def test_stacks_of_another_span_are_not_joined():
    det = StallDetector(stall_ms=50)
    det.on_busy(BusySpan(PID, T0, T0 + 100 * MS))
    det.on_stacks(StacksAt(PID, T0 + 1, T0 + 100 * MS, 40, {EXPIRY: 40}))
    det.finish()
    (v,) = det.results()
    assert v.cpu is None and v.class_ == "not-redis"


def test_live_and_report_show_each_stalls_top_frames():
    import copy

    from test_dashboard import HEADER, SNAPSHOT, final_summary, render, screen

    snap = copy.deepcopy(SNAPSHOT)
    snap["stalls"].append({"start_s": 12.0, "duration_ms": 908.0, "command": "", "key": None, "class": "expiry",
                           "victims": 1, "victim_added_ms": 905.0, "samples": 450,
                           "frames": [{"frames": ["activeExpireCycle", "deleteExpiredKeyAndPropagate", "dictRelease"],
                                       "share": 0.92, "samples": 414}],
                           "folded": [f"{EXPIRY} 414", f"{LOOP} 36"],
                           "advice": ["A big key expired and was freed on the main thread: set"
                                      " `lazyfree-lazy-expire yes`."]})
    text, _ = screen(render(snap, HEADER), width=160)
    assert "on CPU: activeExpireCycle → deleteExpiredKeyAndPropagate → dictRelease 92 %" in text
    report = dict(snap, target={"pid": 4242, "port": 40123, "redis_version": "7.0.15"}, stall_ms=50)
    summary = final_summary(report)
    # plain output fits 80 columns: the frames line wraps between words under a hanging indent
    assert "\n      on CPU: activeExpireCycle" in summary
    assert "on CPU: activeExpireCycle → deleteExpiredKeyAndPropagate → dictRelease 92 %" in " ".join(summary.split())
    assert "[expiry]" in summary and "(key expiry)" in summary


def test_the_expired_key_is_named_from_the_replication_stream_through_the_pipeline():
    from collections import Counter

    from eventstream import PID as SPID, Stream

    from tracer.kernel import events
    from tracer.kernel.stacks import SamplingConfig, stacks_record
    from tracer.runtime.pipeline import Pipeline

    s = Stream()
    s.at(0).accept(9, 50000)
    s.wake()
    s.read(9, b"*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$1\r\n0\r\n")     # a replica's periodic ACK: a replica link
    s.at(1000).wake()
    s.at(901_000).write(9, b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*2\r\n$3\r\nDEL\r\n$3\r\nbig\r\n")
    s.loop(1000, 902_000)
    raw = [events.encode(ev) for ev in s.out]
    raw.append(stacks_record(SPID, s.out[-1].aux_ts, s.out[-1].ts_enter, 440, Counter({EXPIRY: 440}),
                             SamplingConfig()))
    pipeline = Pipeline(stall_ms=50)
    pipeline.feed(raw)
    pipeline.finish()
    (stall,) = pipeline.report({"pid": SPID}).stalls
    assert stall.class_ == "expiry" and stall.samples == 440
    assert "expired key: 'big' (the DEL Redis sent its replicas)" in stall.evidence
    assert stall.frames[0].frames[0] == "activeExpireCycle" and stall.folded == [f"{EXPIRY} 440"]


def test_kernel_samples_without_callers_do_not_clear_a_command():
    """A DEL whose frees end in the kernel (madvise): those samples keep only their user leaf."""
    kernel = "__madvise;asm_exc_page_fault_[k];do_madvise_[k]"
    det = StallDetector(stall_ms=50)
    start, end = T0, T0 + 300 * MS
    det.on_request(mkreq(1, "DEL", "big", wake=start, read_start=start + 5 * US, exec_end=end - 10 * US))
    det.on_busy(BusySpan(PID, start, end))
    det.on_stacks(StacksAt(PID, start, end, 140, {DEL: 40, kernel: 100}))
    det.finish()
    (v,) = det.results()
    assert v.class_ == "bigkey" and v.command == "DEL" and v.cpu.placed == 40
    assert any(e.startswith("100 samples in the kernel or not unwound") for e in v.evidence)


def test_folded_export_lines_and_a_trace_without_samples(tmp_path):
    import subprocess
    import sys

    from tracer_proc import REPO

    from tracer.schema import StallResult
    from tracer.views.export_folded import folded_lines

    stalls = [StallResult(start_s=1.5, duration_ms=90.2, class_="bigkey", folded=[f"{DEL} 30", "[other] 2"]),
              StallResult(start_s=4.0, duration_ms=900.0, class_="expiry", folded=[f"{EXPIRY} 400"]),
              StallResult(start_s=6.0, duration_ms=60.0, class_="unknown")]      # not sampled: no lines
    assert list(folded_lines(stalls)) == [f"stall_at_+4.000s_900ms_expiry;{EXPIRY} 400",
                                          f"stall_at_+1.500s_90ms_bigkey;{DEL} 30",
                                          "stall_at_+1.500s_90ms_bigkey;[other] 2"]
    out = tmp_path / "none.folded"
    proc = subprocess.run([sys.executable, "-m", "tracer", "export", f"{REPO}/tests/fixtures/single.rtrace",
                           "--format", "folded", "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and out.read_text() == ""
    assert "no stall in this trace has on-CPU samples" in proc.stderr


def test_unwind_tables_are_parsed_at_the_first_sample_not_at_attach():
    """Parsing .eh_frame costs ~1.4 s of CPU: at attach it took that from Redis under load (overhead.py
    --configs why: SET 0.65 of untraced). It now waits for the first SAMPLE record (a long busy span)."""
    import threading
    from types import SimpleNamespace

    from tracer.kernel import events
    from tracer.kernel.stacks import SamplingConfig, StackProfiler

    parsed = threading.Event()

    class Space:
        def preload(self, wanted):
            parsed.set()

    class FakeBPF:
        open_perf_events: dict = {}

        def load_func(self, name, kind):
            return SimpleNamespace(fd=-1)

        def _attach_perf_event(self, *args):
            return 7

    profiler = StackProfiler(SamplingConfig(stall_ms=50), space_of=lambda pid: Space())
    profiler.attach(FakeBPF(), [4242])
    assert not parsed.wait(0.3)                         # attached: nothing parsed
    loop = events.encode(events.Event(ts_enter=2_000_000, ts_exit=2_000_000, aux_ts=1_000_000, tgid=4242,
                                      tid=4242, kind=events.LOOP))
    profiler.process([loop])                            # an ordinary short span: still nothing
    assert not parsed.wait(0.3)
    sample = events.encode(events.Event(ts_enter=3_000_000, ts_exit=9_000_000, tgid=4242, tid=4242,
                                        kind=events.SAMPLE))
    assert profiler.process([sample]) == []             # SAMPLE records never go on
    assert parsed.wait(10)                              # the first sample starts the parse
