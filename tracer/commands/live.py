"""`redis-tracer live`: the live dashboard (or a plain periodic summary when stdout is not a TTY).

Every poll of the ring buffer goes drain → (record) → stitch → analyze; the screen is only
rendered on the drain loop's tick, --refresh times a second, so rendering never holds up
draining. Ctrl-C, SIGTERM, --duration or the target exiting end the run cleanly and print the
final summary. `diagnose` and `demo` run the same pipeline through run_traced().
"""
from __future__ import annotations

import io
import os
import sys
import time

from tracer import runner
from tracer.errors import TracerError


def add_analysis_args(p, refresh: bool = True) -> None:
    p.add_argument("--stall-ms", type=float, default=50, metavar="MS",
                   help="a main-thread busy span this long is a stall (default 50)")
    if refresh:
        p.add_argument("--refresh", type=float, default=2, metavar="HZ",
                       help="screen refreshes per second (default 2); without a terminal, one summary "
                            "block is printed per refresh")


def add_parser(sub):
    p = sub.add_parser("live", help="live dashboard: latency per command, request path, stalls with culprits "
                                    "and victims")
    runner.add_target_args(p)
    add_analysis_args(p)
    p.add_argument("--record", metavar="FILE", help="also write every probe record to a trace file "
                                                     "(replay it later)")
    p.add_argument("--svg", metavar="FILE", help="at the end, save the last dashboard frame as an SVG image")
    return p


def check_args(args) -> None:
    runner.check_duration(args)
    if getattr(args, "stall_ms", 50) <= 0:
        raise TracerError(f"--stall-ms must be positive, not {args.stall_ms:g}")
    refresh = getattr(args, "refresh", 2)
    if not 0 < refresh <= 20:
        raise TracerError(f"--refresh must be between 0 and 20 per second, not {refresh:g}")


# -- the pipeline ---------------------------------------------------------------------------------
class LivePipeline:
    """tracer.pipeline.Pipeline (raw records → redacted recording → stitcher → analyzer), plus what
    a live view needs: snapshots on demand. consume() is the drain loop's sink."""

    def __init__(self, stall_ms: float = 50, show_values: bool = False, exec_probes: bool = False, writer=None,
                 targets: list | None = None):
        from tracer.pipeline import Pipeline

        self.shared = Pipeline(stall_ms=stall_ms, show_values=show_values, uprobe_exec=exec_probes, writer=writer,
                               targets=targets)
        self.analyzer = self.shared.analyzer
        self.stitcher = self.shared.stitcher

    def consume(self, records) -> None:
        if records:
            self.shared.feed(records)

    def snapshot(self) -> dict:
        # kernel counters reach the analyzer as COUNTERS records in the stream (runner.drain_loop)
        now = time.monotonic_ns()
        snap = self.analyzer.snapshot(now)
        if self.shared.instances:
            snap["nodes"] = self.shared.node_rows(now)
        return snap

    def finish(self) -> None:
        self.shared.finish()

    def report(self, target: dict) -> dict:
        return self.shared.report(target)


# -- what the header and the report say about the target --------------------------------------------
def aof_mode(info: dict) -> str:
    if str(info.get("appendonly") or "").lower() != "yes":
        return "off" if info.get("appendonly") is not None else ""
    return str(info.get("appendfsync") or "on")


def probe_mode(session) -> str:
    return "syscalls+uprobes" if getattr(session, "exec_attached", False) else "syscalls"


def target_dict(target, session=None) -> dict:
    from tracer import trace_header

    t = trace_header.target_dict(target)
    if session is not None:
        t["probe_mode"] = probe_mode(session)
    return t


def make_header(target, session, title: str, stall_ms: float, started: float, snap: dict) -> dict:
    info = target.info or {}
    return {"title": title, "pid": target.pid, "port": target.port,
            "redis_version": info.get("redis_version") or "", "io_threads": info.get("io_threads"),
            "aof": aof_mode(info), "probe_mode": probe_mode(session), "stall_ms": stall_ms,
            "elapsed_s": time.monotonic() - started, "rps": snap.get("rps", 0),
            "lost_events": snap.get("lost_events", 0)}


def check_record_path(path: str) -> None:
    """Fail before attaching (which takes seconds) when --record cannot be created."""
    if os.path.lexists(path):
        raise TracerError(f"{path} already exists", "choose another --record FILE, or remove it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise TracerError(f"cannot record to {path}: {parent} is not a directory")


def open_recording(path: str, args, session, targets):
    """The TraceWriter for --record: the same header `redis-tracer record` writes."""
    try:
        from tracer import recording, trace_header
    except ModuleNotFoundError as err:
        if err.name in ("tracer.recording", "tracer.trace_header"):
            raise TracerError("--record is not available: this build has no tracer.recording module",
                              "run without --record") from None
        raise
    from tracer.model import Clock

    targets = targets if isinstance(targets, list) else [targets]
    header = trace_header.build(session, targets, Clock(), args.stall_ms, args.show_values)
    return recording.TraceWriter(path, header)


# -- running --------------------------------------------------------------------------------------
class Result:
    def __init__(self, report: dict, snapshot: dict, header: dict, reason: str, elapsed_s: float = 0.0):
        self.report = report
        self.snapshot = snapshot
        self.header = header
        self.reason = reason
        self.elapsed_s = elapsed_s  # wall time traced (attach to stop)


def run_traced(args, target, *, title: str = "live", mode: str = "auto", on_attached=None,
               on_stop=None) -> Result:
    """Attach, analyse until stopped, detach. mode: "dashboard" | "plain" | "quiet" | "auto"
    (dashboard when stdout is a terminal, else plain). on_attached() runs right after the probes
    are attached (demo starts its workload there); on_stop() right after the drain loop ends."""
    targets = target if isinstance(target, list) else [target]
    target = targets[0]  # the header and the report's "target" name the first; "instances" has all
    if mode == "auto":
        mode = "dashboard" if sys.stdout.isatty() else "plain"
    record = getattr(args, "record", None)
    if record:
        check_record_path(record)
    session = writer = None
    reason = "stopped"
    last = {"snap": {}, "header": {}}
    aborted = None
    try:
        session = runner.attach(args, targets)
        writer = open_recording(record, args, session, targets) if record else None
        pipeline = LivePipeline(stall_ms=args.stall_ms, show_values=args.show_values,
                                exec_probes=session.exec_attached, writer=writer,
                                targets=[target_dict(t, session) for t in targets])
        started = time.monotonic()
        if on_attached is not None:
            on_attached()

        def frame():
            snap = pipeline.snapshot()
            header = make_header(target, session, title, args.stall_ms, started, snap)
            last["snap"], last["header"] = snap, header
            return snap, header

        tick_s = 1.0 / getattr(args, "refresh", 2)
        try:
            if mode == "dashboard":
                reason = _run_dashboard(args, session, pipeline, frame, tick_s)
            elif mode == "plain":
                from dashboards.plain import summary_block

                def tick():
                    snap, header = frame()
                    print(summary_block(snap, header), flush=True)

                reason = runner.drain_loop(session, pipeline.consume, args.duration, args.poll_ms,
                                           tick=tick, tick_s=tick_s)
            else:
                reason = runner.drain_loop(session, pipeline.consume, args.duration, args.poll_ms)
        finally:
            if on_stop is not None:
                on_stop()
        pipeline.finish()
        frame()
        report = pipeline.report(target_dict(target, session))
    except BaseException as err:
        aborted = type(err).__name__
        raise
    finally:
        if session is not None:
            session.close()
        if writer is not None:
            if aborted is None:
                writer.write_trailer({"requests": pipeline.stitcher.stats.requests,
                                      "lost_events": pipeline.shared.lost_events})
            writer.close(aborted=aborted)
    return Result(report, last["snap"], last["header"], reason, last["header"].get("elapsed_s", 0.0))


def _run_dashboard(args, session, pipeline, frame, tick_s: float) -> str:
    from rich.console import Console
    from rich.live import Live

    from dashboards.live import Dashboard

    dash = Dashboard()
    console = Console()
    # The alternate screen: whole-frame redraws that tmux and resizes handle cleanly, and the
    # scrollback keeps only the final summary.
    with Live(console=console, screen=True, auto_refresh=False, redirect_stdout=True,
              redirect_stderr=True) as live:
        def tick():
            live.update(dash.render(*frame()), refresh=True)

        tick()
        return runner.drain_loop(session, pipeline.consume, args.duration, args.poll_ms, tick=tick, tick_s=tick_s)


def save_svg(path: str, snapshot: dict, header: dict, width: int = 120, height: int = 40,
             title: str = "redis-tracer live") -> None:
    from rich.console import Console

    from dashboards.live import Dashboard

    console = Console(record=True, width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", legacy_windows=False)
    console.print(Dashboard().render(snapshot, header))
    try:
        console.save_svg(path, title=title)
    except OSError as err:
        raise TracerError(f"cannot write {path}: {err.strerror}") from None


def print_summary(result: Result, stall_ms: float, out=None) -> None:
    from dashboards.plain import final_summary

    out = out or sys.stdout
    report = dict(result.report)
    report.setdefault("stall_ms", stall_ms)
    if result.elapsed_s:
        # "traced for" is the time the probes were attached, not the first-to-last event span
        report["elapsed_s"] = round(result.elapsed_s, 1)
        report["rps"] = (report.get("requests") or 0) / result.elapsed_s
    for key in ("slowest", "connections", "fsync"):
        # the report's own figures win; the last snapshot fills in what the report does not carry
        if key not in report and key in result.snapshot:
            report[key] = result.snapshot[key]
    if isinstance(report.get("connections"), dict) and isinstance(result.snapshot.get("connections"), dict):
        report["connections"] = {**result.snapshot["connections"], **report["connections"]}
    if isinstance(report.get("fsync"), dict) and isinstance(result.snapshot.get("fsync"), dict):
        report["fsync"] = {**result.snapshot["fsync"], **report["fsync"]}
    print(final_summary(report), file=out, flush=True)


def run(args) -> int:
    check_args(args)
    targets = runner.resolve_targets(args)
    result = run_traced(args, targets, title="live")
    if args.svg:
        save_svg(args.svg, result.snapshot, result.header)
    print_summary(result, args.stall_ms)
    return 0
