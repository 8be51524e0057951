"""`agent --interval S`: one JSON line per interval on stdout, between the stall lines, with that
interval's own figures (counts, percentiles, rps: not cumulative). The lines are those of
`live --interval` (tracer/runtime/intervals.py: the same meter and layout), marked "event": "interval"
where a stall line says "event": "stall".

A session's meter starts at its attach; when the session ends (a signal, a Redis restart, a new
redis-server with --all) what it counted since its last line is printed as one shorter interval, so
the lines' counts add up to every request the agent saw.
"""
from __future__ import annotations

import time

from tracer.runtime.intervals import IntervalMeter, interval_json
from tracer.units import r3

EVENT = {"event": "interval"}


class IntervalLog:
    def __init__(self, interval_s: float, out):
        self.interval_s = interval_s
        self.out = out
        self.index = 0              # interval lines printed, across sessions
        self.meter: IntervalMeter | None = None
        self.since = 0.0            # monotonic time of the last line (or of the session's attach)

    def begin(self, pipeline) -> None:
        """A session attached: its own counts start from nothing."""
        self.meter = IntervalMeter(pipeline, self.interval_s)
        self.since = time.monotonic()

    def tick(self) -> bool:
        """One interval has passed (drain_loop's tick: steady, every interval_s). False: the run goes on."""
        if self.meter is not None:
            self._line(self.interval_s)
        return False

    def end(self) -> None:
        """The session ends, its last records fed: the rest of its counts as a shorter interval."""
        if self.meter is not None:
            self._line(r3(max(time.monotonic() - self.since, 1e-3)))
            self.meter = None

    def _line(self, seconds: float) -> None:
        meter = self.meter
        meter.interval_s = seconds      # rates of a shortened last interval are per its own length
        snap = meter.next(meter.pipeline.snapshot(time.monotonic_ns()))
        self.since = time.monotonic()
        self.index += 1
        print(interval_json(self.index, seconds, snap, head=EVENT), file=self.out, flush=True)
