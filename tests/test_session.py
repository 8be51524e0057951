"""The one runtime (tracer/runtime/session.py): a replay shows what live mode shows.

Root-free: recordings from tests/fixtures and hand-made trace files. Before the runtime was
shared, replay built its header and frame by hand and had drifted: no nodes panel for several
instances, the AOF setting worked out differently, the probe mode spelled out again.
"""
from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from tracer.dashboards.live import render
from tracer.runtime import session
from tracer.schema import Snapshot
from tracer.tracefile.recording import TraceWriter

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def screen_text(snap, header, width: int = 120) -> str:
    console = Console(record=True, width=width, height=45, file=io.StringIO(), force_terminal=True)
    console.print(render(snap, header))
    return console.export_text()


def empty_trace(tmp_path, **header) -> str:
    path = tmp_path / "t.rtrace"
    with TraceWriter(path, header):
        pass
    return str(path)


def test_replay_of_several_instances_has_the_nodes_panel():
    result = session.replay(str(FIXTURES / "multi.rtrace"), speed=None, mode="quiet")
    nodes = result.snapshot.nodes
    assert len(nodes) == 2 and {n.pid for n in nodes} == {i["target"]["pid"] for i in
                                                          result.report.to_json()["instances"]}
    assert sum(n.requests for n in nodes) == result.report.requests
    text = screen_text(result.snapshot, result.header)
    assert "nodes" in text and all(f":{n.port} pid {n.pid}" in text for n in nodes)


def test_replay_header_names_target_aof_and_probe_mode():
    result = session.replay(str(FIXTURES / "single.rtrace"), speed=None, mode="quiet")
    h = result.header
    assert h.aof == "everysec" and h.probe_mode == "syscalls" and h.redis_version.startswith("7.")
    assert h.pid == result.report.target.pid and h.title.startswith("replay ")
    assert h.elapsed_s == result.snapshot.elapsed_s > 0      # the trace clock, not the wall clock
    text = screen_text(result.snapshot, h, width=220)     # the title holds the file's whole path
    assert "aof everysec" in text and "syscalls" in text


def test_aof_label_is_worked_out_once():
    assert session.aof_label({"appendonly": "no", "appendfsync": "everysec"}) == "off"
    assert session.aof_label({"appendonly": "yes", "appendfsync": "always"}) == "always"
    assert session.aof_label({"appendonly": "yes"}) == "on"         # on, policy not reported
    assert session.aof_label({}) == ""                               # not known: nothing claimed


def test_replay_uses_the_recorded_aof_and_mode(tmp_path):
    path = empty_trace(tmp_path, targets=[{"pid": 7, "port": 6379, "appendonly": "yes"}], exec_probes=True)
    h = session.replay(path, speed=None, mode="quiet").header
    assert h.aof == "on" and h.probe_mode == "syscalls+uprobes"
    unknown = empty_trace(tmp_path / "..", targets=[{"pid": 7, "port": 6379}])
    h = session.replay(unknown, speed=None, mode="quiet").header
    assert h.aof == "" and h.probe_mode == "syscalls"


def test_live_and_trace_clock_frames_share_the_header():
    """The same target described once gives the same facts on either clock."""
    from tracer.runtime.pipeline import Pipeline

    target = {"pid": 9, "port": 7000, "redis_version": "7.0.15", "io_threads": 1, "appendonly": "yes",
              "appendfsync": "always"}
    frames = [session.Frames(Pipeline(targets=[target]), "t", target, True, 50, live_clock=live)
              for live in (True, False)]
    live_h, trace_h = (f()[1] for f in frames)
    for name in ("pid", "port", "redis_version", "io_threads", "aof", "probe_mode", "stall_ms"):
        assert getattr(live_h, name) == getattr(trace_h, name), name
    assert live_h.aof == "always" and live_h.probe_mode == "syscalls+uprobes"


def test_summary_report_keeps_the_run_report_and_adds_the_last_frame():
    result = session.replay(str(FIXTURES / "single.rtrace"), speed=None, mode="quiet")
    summary = session.summary_report(result, 50)
    assert summary.requests == result.report.requests and summary.stall_ms == 50
    assert summary.slowest == result.snapshot.slowest and summary.fsync.count == result.report.fsync.count
    assert summary.fsync.aof_writes == result.snapshot.fsync.aof_writes
    assert result.report.stall_ms is None                            # the run's report is not modified
    assert isinstance(Snapshot.from_json(result.snapshot.to_json()), Snapshot)
