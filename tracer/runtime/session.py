"""One traced run, whatever drives it: live, demo, diagnose and record attach to redis-servers,
replay reads a recording. All of them go records → (recording) → pipeline → frames → screen,
here and only here.

A frame is (Snapshot, ScreenHeader). Its clock is the live clock (wall time since the probes
attached; rates up to now) or the trace clock (a recording's own timestamps), and the header's
facts come from the same target description (trace_header.target_json) either way, so a replay
shows what live mode showed: the nodes panel, the AOF setting, the probe mode.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass

from tracer.errors import TracerError
from tracer.kernel.bpf_session import probe_mode
from tracer.options import REFRESH_HZ, STALL_MS, TraceOptions
from tracer.runtime import offline, runner
from tracer.runtime.pipeline import Pipeline
from tracer.runtime.window import covered_s
from tracer.schema import Report, ScreenHeader, Snapshot, TraceHeader

REPLAY_BATCH = 2048         # records fed to the pipeline at once during a paced replay
REPLAY_AHEAD_S = 0.005      # a replay sleeps only when it runs this far ahead of the trace clock


# -- what the header says about the target ---------------------------------------------------------------
def aof_label(target: dict) -> str:
    """'off', the appendfsync policy when the AOF is on, or '' when the target did not say."""
    appendonly = target.get("appendonly")
    if str(appendonly or "").lower() != "yes":
        return "off" if appendonly is not None else ""
    return str(target.get("appendfsync") or "on")


def screen_header(title: str, target: dict, exec_probes: bool, stall_ms: float, snap: Snapshot,
                  elapsed_s: float) -> ScreenHeader:
    return ScreenHeader(title=title, pid=target.get("pid"), port=target.get("port"),
                        redis_version=target.get("redis_version") or "", io_threads=target.get("io_threads"),
                        aof=aof_label(target), stall_ms=stall_ms,
                        probe_mode="engine" if snap.mode == "engine" else probe_mode(exec_probes),
                        elapsed_s=elapsed_s, rps=snap.rps, lost_events=snap.lost_events)


# -- frames: the pipeline's state, on one of two clocks ------------------------------------------------------
class Frames:
    """Makes (Snapshot, ScreenHeader) frames and keeps the last one."""

    def __init__(self, pipeline: Pipeline, title: str, target: dict, exec_probes: bool, stall_ms: float,
                 live_clock: bool):
        self.pipeline = pipeline
        self.title = title
        self.target = target
        self.exec_probes = exec_probes
        self.stall_ms = stall_ms
        self.live_clock = live_clock
        self.started = time.monotonic()
        self.snapshot = Snapshot()
        self.header = screen_header(title, target, exec_probes, stall_ms, self.snapshot, 0.0)

    def __call__(self) -> tuple[Snapshot, ScreenHeader]:
        if self.live_clock:     # rates up to now; traced for as long as the probes have been attached
            snap = self.pipeline.snapshot(time.monotonic_ns())
            elapsed = time.monotonic() - self.started
        else:                   # the recording's own clock: up to its last record so far
            snap = self.pipeline.snapshot(self.pipeline.stitcher.last_ts or None)
            elapsed = snap.elapsed_s
        self.snapshot = snap
        self.header = screen_header(self.title, self.target, self.exec_probes, self.stall_ms, snap, elapsed)
        return snap, self.header


# -- screens -----------------------------------------------------------------------------------------------
def pick_mode(mode: str) -> str:
    """"auto": the dashboard on a terminal, plain summary blocks otherwise."""
    if mode == "auto":
        return "dashboard" if sys.stdout.isatty() else "plain"
    return mode


@contextlib.contextmanager
def screen(mode: str, frames: Frames, count: int | None = None, interval_s: float | None = None):
    """A show() callable for the run's mode: "dashboard" | "plain" | "quiet", or "json-intervals" |
    "plain-intervals" (one JSON line / plain block per interval of its own figures: live --interval).
    With `count`, show() returns True once it has shown that many (the run then ends)."""
    if count:
        with screen(mode, frames, None, interval_s) as inner:
            shown = 0

            def show():
                nonlocal shown
                inner()
                shown += 1
                return shown >= count
            yield show
        return
    if mode in ("json-intervals", "plain-intervals"):
        from tracer.dashboards.plain import summary_block
        from tracer.runtime.intervals import IntervalMeter, interval_json

        meter = IntervalMeter(frames.pipeline, interval_s or 1.0)

        def show():
            snap = meter.next(frames()[0])
            if mode == "json-intervals":
                print(interval_json(meter.index, meter.interval_s, snap), flush=True)
            else:
                header = dataclasses.replace(frames.header, rps=snap.rps, lost_events=snap.lost_events)
                print(summary_block(snap, header), flush=True)
        yield show
        return
    if mode == "dashboard":
        from rich.console import Console
        from rich.live import Live

        from tracer.dashboards.live import Dashboard

        dash = Dashboard()
        # The alternate screen: whole-frame redraws that tmux and resizes handle cleanly, and the
        # scrollback keeps only the final summary.
        with Live(console=Console(highlight=False), screen=True, auto_refresh=False, redirect_stdout=True,
                  redirect_stderr=True) as live:
            def show():
                live.update(dash.render(*frames()), refresh=True)

            show()
            yield show
    elif mode == "plain":
        from tracer.dashboards.plain import summary_block

        def show():
            print(summary_block(*frames()), flush=True)

        yield show
    else:
        yield None


# -- recordings ----------------------------------------------------------------------------------------------
def check_record_path(path: str, overwrite: bool = False) -> None:
    """Fail before attaching (which takes seconds) when the trace file cannot be created."""
    if os.path.lexists(path) and not overwrite:
        raise TracerError(f"{path} already exists", "choose another file name, or remove it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise TracerError(f"cannot record to {path}: {parent} is not a directory")


def open_recording(path: str, header: TraceHeader, overwrite: bool = False):
    from tracer.tracefile.recording import TraceWriter

    return TraceWriter(path, header.to_json(), overwrite=overwrite)


def close_recording(writer, pipeline: Pipeline | None, failure: BaseException | None,
                    detached_ns: int | None = None) -> dict:
    """Trailer and close; after a failure the file is closed as aborted (what is on disk stays readable).
    detached_ns: when the probes stopped, in the records' clock (the trailer keeps it)."""
    summary = {"records": writer.records_written,
               "requests": pipeline.requests if pipeline is not None else 0,
               "lost_events": pipeline.lost_events if pipeline is not None else 0}
    if failure is None:
        # the detach time (the records' clock): durations and rates of a report run attach to detach
        writer.write_trailer({"requests": summary["requests"], "lost_events": summary["lost_events"],
                              "detached_ns": detached_ns or time.monotonic_ns()})
        writer.close()
    else:
        writer.close(aborted=str(failure) or type(failure).__name__)
    return summary


# -- one run -------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Result:
    report: Report
    snapshot: Snapshot      # the last frame
    header: ScreenHeader
    reason: str             # why it stopped: "duration", "SIGINT", "target exited", "end of file", ...
    elapsed_s: float = 0.0  # time traced: attach to stop (a replay: as its file says; 0 when it does not)
    recorded: dict | None = None   # records/requests/lost_events written to the trace file


def run_traced(options: TraceOptions, targets: list, *, title: str = "live", mode: str = "auto",
               on_attached=None, on_stop=None, overwrite: bool = False, count: int | None = None,
               histograms: bool = False) -> Result:
    """Attach, analyse until stopped, detach. mode: "dashboard" | "plain" | "quiet" | "auto".
    on_attached() runs right after the probes are attached (demo starts its workload there);
    on_stop() right after the drain loop ends. With options.record_path every record is also
    written to a trace file. histograms: the report carries log2 histograms (as `report --json`)."""
    from tracer.tracefile import trace_header

    mode = pick_mode(mode)
    record = options.record_path
    if record:
        check_record_path(record, overwrite)
    session = writer = pipeline = None
    failure = detached = None
    try:
        session = runner.attach(options, targets)
        header = trace_header.build(session, targets, time.time_ns() - time.monotonic_ns(), options)
        writer = open_recording(record, header, overwrite) if record else None
        pipeline = Pipeline(stall_ms=options.stall_ms, show_values=options.show_values,
                            uprobe_exec=session.exec_attached, writer=writer, targets=header.targets,
                            patterns=options.patterns, engine=options.mode == "engine", histograms=histograms)
        # the screen and the report's "target" name the first target; "instances" has all
        frames = Frames(pipeline, title, header.targets[0], session.exec_attached, options.stall_ms,
                        live_clock=True)
        if on_attached is not None:
            on_attached()
        try:
            with screen(mode, frames, count, options.tick_s) as show:
                reason = runner.drain_loop(session, pipeline.feed, options.duration, options.poll_ms,
                                           tick=show, tick_s=options.tick_s)
        finally:
            if on_stop is not None:
                on_stop()
        detached = time.monotonic_ns()
        pipeline.finish()
        frames()
        # attach to detach, as `report` times the recording (the trailer keeps this detach time)
        pipeline.covered_s = covered_s(header.attached_ns, detached, 0, 0)
        report = pipeline.report(header.targets[0])
    except BaseException as err:
        failure = err
        raise
    finally:
        if session is not None:
            session.close()
        recorded = close_recording(writer, pipeline, failure, detached) if writer is not None else None
    return Result(report, frames.snapshot, frames.header, reason, frames.header.elapsed_s, recorded)


class Player:
    """Feeds a recording's records to the pipeline paced by their own timestamps (speed None: at
    once); the screen is shown on a steady tick meanwhile."""

    def __init__(self, pipeline: Pipeline, speed: float | None, show, tick_s: float):
        from tracer.kernel.events import record_ts

        self.record_ts = record_ts
        self.pipeline = pipeline
        self.speed = speed
        self.show = show or (lambda: None)
        self.tick_s = tick_s
        self.trace_t0 = 0
        self.wall_t0 = 0.0
        self.next_tick = time.monotonic() + tick_s
        self.batch: list = []

    def feed(self, raw: bytes) -> None:
        self.batch.append(raw)
        if self.speed is not None:
            ts = self.record_ts(raw)
            if ts:
                if not self.trace_t0:
                    self.trace_t0, self.wall_t0 = ts, time.monotonic()
                due = self.wall_t0 + (ts - self.trace_t0) / 1e9 / self.speed
                if due - time.monotonic() > REPLAY_AHEAD_S:
                    self.flush()
                    self._sleep_until(due)
        if len(self.batch) >= REPLAY_BATCH:
            self.flush()

    def _sleep_until(self, due: float) -> None:
        while True:
            now = time.monotonic()
            if now >= due:
                return
            if now >= self.next_tick:
                self.show()
                self.next_tick = now + self.tick_s
            time.sleep(min(due - now, max(0.0, self.next_tick - now), 0.05))

    def flush(self) -> None:
        if self.batch:
            self.pipeline.feed(self.batch)
            self.batch = []
        if time.monotonic() >= self.next_tick:
            self.show()
            self.next_tick = time.monotonic() + self.tick_s


def replay(path: str, *, speed: float | None, stall_ms: float | None = None, refresh_hz: float | None = None,
           mode: str = "auto", progress=None) -> Result:
    """A recording through the same pipeline and screen as live mode, on the trace clock.
    progress(done_bytes, total_bytes) after each batch (replay --max)."""
    reader = offline.open_trace(path)
    header = TraceHeader.from_json(reader.header)
    pipeline = offline.pipeline_for(header, stall_ms, histograms=True)
    threshold = stall_ms if stall_ms is not None else header.stall_ms or STALL_MS
    frames = Frames(pipeline, f"replay {path}", header.first_target, header.exec_probes, threshold,
                    live_clock=False)
    reason = "end of file"
    try:
        with screen(pick_mode(mode), frames) as show:
            player = Player(pipeline, speed, show, 1.0 / (refresh_hz or REFRESH_HZ))
            fed = 0
            for raw in reader.records():
                player.feed(raw)
                fed += 1
                if progress is not None and not fed % REPLAY_BATCH:
                    progress(reader.offset, reader.size)
            player.flush()
    except KeyboardInterrupt:
        reason = "interrupted"
        print("redis-tracer: replay interrupted", file=sys.stderr)
    pipeline.finish()
    offline.print_warnings(reader)
    frames()
    detached = (reader.trailer or {}).get("detached_ns")
    # traced for attach to detach when the file says them (not the first-to-last request span)
    if header.attached_ns:
        pipeline.covered_s = covered_s(header.attached_ns, detached if type(detached) is int else None,
                                       pipeline.stitcher.first_ts, pipeline.stitcher.last_ts)
    return Result(pipeline.report(header.first_target), frames.snapshot, frames.header, reason,
                  pipeline.covered_s or 0.0)


# -- the end of a run ------------------------------------------------------------------------------------------
def summary_report(result: Result, stall_ms: float) -> Report:
    """The report a final summary shows: the run's report, timed by the wall clock when traced live,
    with what only the last frame knows (slowest requests, AOF writes, open connections)."""
    report = dataclasses.replace(result.report)
    report.stall_ms = stall_ms
    if result.elapsed_s:
        # "traced for" is the time the probes were attached, not the first-to-last event span
        report.elapsed_s = round(result.elapsed_s, 1)
        report.rps = (report.requests or 0) / result.elapsed_s
    report.slowest = result.snapshot.slowest
    report.fsync = dataclasses.replace(result.snapshot.fsync, count=report.fsync.count,
                                       main_thread=report.fsync.main_thread, p99_us=report.fsync.p99_us,
                                       max_us=report.fsync.max_us)
    report.connections = dataclasses.replace(result.snapshot.connections, accepted=report.connections.accepted,
                                             closed=report.connections.closed)
    return report


def print_summary(result: Result, stall_ms: float, out=None) -> None:
    from tracer.dashboards.plain import final_summary

    print(final_summary(summary_report(result, stall_ms)), file=out or sys.stdout, flush=True)
