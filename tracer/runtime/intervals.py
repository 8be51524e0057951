"""`live --interval S --count N`: each interval's own figures, as `biolatency 1 10` and
`redis-cli --latency-history` print them, not the run's cumulative ones.

The analysis keeps cumulative counts and histograms (the Analyzer's per command on the full path,
the kernel's in engine mode); an interval is the difference between their state at its end and
at its start: counts, percentiles from the bucket differences, phase totals, lost events, and the
stalls and slowest requests that began in it.
"""
from __future__ import annotations

import dataclasses
import json
import time

from tracer.analyze.histogram import bucket_value as full_bucket_value, nearest_rank
from tracer.engine.histogram import bucket_value as engine_bucket_value
from tracer.errors import UsageError
from tracer.options import REFRESH_MAX
from tracer.schema import CommandStats, Snapshot
from tracer.units import ns_to_us, r3


def _percentiles(buckets, value_of, ps) -> list[int]:
    total = sum(buckets)
    out = []
    for p in ps:
        rank = nearest_rank(p, total)
        cum = 0
        for idx, n in enumerate(buckets):
            cum += n
            if n and cum >= rank:
                out.append(value_of(idx))
                break
    return out


class IntervalMeter:
    """Makes one Snapshot per interval from a pipeline's cumulative state."""

    def __init__(self, pipeline, interval_s: float):
        self.pipeline = pipeline
        self.interval_s = interval_s
        self.index = 0
        self.prev = self._state()
        self.prev_elapsed = 0.0
        self.prev_lost = 0
        self.prev_phases: dict = {}

    def _state(self) -> dict:
        """name -> (count, bucket counts, bucket_value, largest value in ns) now."""
        engine = self.pipeline.engine
        if engine is not None and engine.active:
            return {name: (fields["count"], list(hist.buckets), engine_bucket_value, fields.get("max_ns", 0))
                    for name, (fields, hist) in engine.merged().items()}
        return {name: (c.count, list(c.hist.counts), full_bucket_value, c.hist.max)
                for name, c in self.pipeline.analyzer.commands.items()}

    def next(self, snap: Snapshot) -> Snapshot:
        """The interval that ends at `snap` (the pipeline's snapshot now)."""
        state = self._state()
        rows = {}
        for name, (count, buckets, value_of, top) in state.items():
            before = self.prev.get(name)
            if before is not None:
                count -= before[0]
                buckets = [a - b for a, b in zip(buckets, before[1])]
            if count <= 0 and not any(buckets):
                continue
            row = CommandStats(count=max(count, 0), rps=r3(max(count, 0) / self.interval_s))
            if any(n > 0 for n in buckets):
                buckets = [max(n, 0) for n in buckets]
                p50, p99, p999, p100 = (min(v, top) for v in _percentiles(buckets, value_of, (50, 99, 99.9, 100)))
                row.p50_us, row.p99_us, row.p999_us, row.max_us = ns_to_us(p50), ns_to_us(p99), ns_to_us(p999), \
                    ns_to_us(p100)
            rows[name] = row
        self.prev = state
        since = self.prev_elapsed
        phases = {p: max(0.0, v - self.prev_phases.get(p, 0.0)) for p, v in snap.phases_us_total.items()}
        out = dataclasses.replace(
            snap, commands=dict(sorted(rows.items(), key=lambda kv: (-kv[1].count, kv[0]))),
            requests=sum(r.count for r in rows.values()), rps=r3(sum(r.count for r in rows.values()) / self.interval_s),
            lost_events=max(0, snap.lost_events - self.prev_lost), phases_us_total=phases,
            stalls=[s for s in snap.stalls if float(s.start_s) >= since],
            slowest=[r for r in snap.slowest if r.start_s is None or r.start_s >= since])
        self.prev_elapsed, self.prev_lost, self.prev_phases = snap.elapsed_s, snap.lost_events, snap.phases_us_total
        self.index += 1
        return out


def check_interval(seconds: float) -> float:
    """An --interval S the refresh loop can keep (live, agent)."""
    if not 1 / REFRESH_MAX <= seconds <= 3600:
        raise UsageError(f"--interval must be between {1 / REFRESH_MAX:g} and 3600 seconds, not {seconds:g}")
    return seconds


def interval_json(index: int, interval_s: float, snap: Snapshot, now: float | None = None,
                  head: dict | None = None) -> str:
    """One line of JSON for an interval: `head` (the agent's "event"), when it ended, its number and
    length, then its figures."""
    doc = snap.to_json()
    for row in doc.get("commands", {}).values():
        row.pop("spark", None)
    now = time.time() if now is None else now
    head = {**(head or {}), "interval": index, "interval_s": interval_s,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))}
    return json.dumps({**head, **doc}, default=str)
