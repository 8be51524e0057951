"""`redis-tracer replay FILE`: the live dashboard driven by a recording, through the same pipeline."""
from __future__ import annotations

import sys
import time

from tracer.errors import TracerError


def add_parser(sub):
    p = sub.add_parser("replay", help="play a trace file back through the live dashboard")
    p.add_argument("file", metavar="FILE")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=float, default=1.0, metavar="X", help="playback speed (default 1.0)")
    speed.add_argument("--max", action="store_true", help="as fast as possible")
    p.add_argument("--stall-ms", type=float, default=None, help="stall threshold (default: as recorded)")
    p.add_argument("--refresh", type=float, default=2, metavar="HZ", help="screen refreshes per second")
    p.add_argument("--plain", action="store_true", help="periodic plain-text summaries, no dashboard")
    return p


class Player:
    """Feeds records to the pipeline paced by their own timestamps; renders on a steady tick."""

    def __init__(self, pipeline, speed: float | None, tick, tick_s: float):
        self.pipeline = pipeline
        self.speed = speed
        self.tick = tick
        self.tick_s = tick_s
        self.trace_t0 = 0
        self.wall_t0 = 0.0
        self.next_tick = time.monotonic() + tick_s
        self.batch: list = []

    def feed(self, raw: bytes) -> None:
        self.batch.append(raw)
        if self.speed is not None:
            ts = int.from_bytes(raw[8:16], "little") or int.from_bytes(raw[0:8], "little")
            if ts:
                if not self.trace_t0:
                    self.trace_t0, self.wall_t0 = ts, time.monotonic()
                due = self.wall_t0 + (ts - self.trace_t0) / 1e9 / self.speed
                ahead = due - time.monotonic()
                if ahead > 0.005:
                    self.flush()
                    self._sleep_until(due)
        if len(self.batch) >= 2048:
            self.flush()

    def _sleep_until(self, due: float) -> None:
        while True:
            now = time.monotonic()
            if now >= due:
                return
            if now >= self.next_tick:
                self.tick()
                self.next_tick = now + self.tick_s
            time.sleep(min(due - now, max(0.0, self.next_tick - now), 0.05))

    def flush(self) -> None:
        if self.batch:
            self.pipeline.feed(self.batch)
            self.batch = []
        if time.monotonic() >= self.next_tick:
            self.tick()
            self.next_tick = time.monotonic() + self.tick_s


def run(args) -> int:
    from tracer.runtime import offline
    from tracer.runtime.pipeline import Pipeline

    if not args.max and args.speed <= 0:
        raise TracerError(f"--speed must be positive, not {args.speed:g}")
    if not 0 < args.refresh <= 20:
        raise TracerError(f"--refresh must be between 0 and 20 per second, not {args.refresh:g}")
    reader = offline.open_trace(args.file)
    header = reader.header
    target = offline.first_target(header)
    stall_ms = args.stall_ms if args.stall_ms is not None else header.get("stall_ms", 50)
    pipeline = Pipeline(stall_ms=stall_ms, show_values=bool(header.get("show_values")),
                        uprobe_exec=bool(header.get("exec_probes")), targets=header.get("targets"))
    dash_header = {"title": f"replay {args.file}", "pid": target.get("pid"), "port": target.get("port"),
                   "redis_version": target.get("redis_version") or "", "io_threads": target.get("io_threads"),
                   "aof": target.get("appendfsync") if target.get("appendonly") == "yes" else "off",
                   "probe_mode": "syscalls+uprobes" if header.get("exec_probes") else "syscalls",
                   "stall_ms": stall_ms}

    def frame():
        snap = pipeline.analyzer.snapshot(pipeline.stitcher.last_ts or None)
        h = dict(dash_header, elapsed_s=snap.get("elapsed_s", 0), rps=snap.get("rps", 0),
                 lost_events=snap.get("lost_events", 0))
        return snap, h

    speed = None if args.max else args.speed
    tick_s = 1.0 / args.refresh
    interactive = sys.stdout.isatty() and not args.plain
    try:
        if interactive:
            from rich.live import Live

            from tracer.dashboards.live import Dashboard

            dash = Dashboard()
            with Live(screen=True, auto_refresh=False) as live:
                player = Player(pipeline, speed, lambda: live.update(dash.render(*frame()), refresh=True), tick_s)
                for raw in reader.records():
                    player.feed(raw)
                player.flush()
        else:
            from tracer.dashboards.plain import summary_block

            player = Player(pipeline, speed, lambda: print(summary_block(*frame()), flush=True), tick_s)
            for raw in reader.records():
                player.feed(raw)
            player.flush()
    except KeyboardInterrupt:
        print("redis-tracer: replay interrupted", file=sys.stderr)
    pipeline.finish()
    for warning in reader.warnings:
        print(f"redis-tracer: warning: {warning}", file=sys.stderr)
    from tracer.dashboards.plain import final_summary

    print(final_summary(pipeline.report(target)), flush=True)
    return 0
