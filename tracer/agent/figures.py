"""What the agent has counted since it started, per redis-server instance, across re-attaches.

The kernel's maps start from zero at every attach (a Redis restart, a new redis-server with --all), so
the figures of each finished probe session are folded into a base that the live session's are added
to: the counters Prometheus reads never go backwards while the agent runs. Histograms stay in the
kernel's log-linear buckets (tracer/engine/histogram.py) until a scrape maps them to Prometheus's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tracer.engine.histogram import bucket_index
from tracer.engine.layout import NBUCKETS


def _zeros() -> list:
    return [0] * NBUCKETS


@dataclass(slots=True)
class Histogram:
    """count, sum (ns) and the kernel's buckets."""
    count: int = 0
    sum_ns: int = 0
    buckets: list = field(default_factory=_zeros)

    def add(self, count: int, sum_ns: int, buckets) -> None:
        self.count += count
        self.sum_ns += sum_ns
        self.buckets = [a + b for a, b in zip(self.buckets, buckets)]

    def observe(self, ns: int) -> None:
        """One value (an fsync: a few per second at most, never per request)."""
        self.count += 1
        self.sum_ns += ns
        self.buckets[bucket_index(ns)] += 1

    def merged(self, other: "Histogram") -> "Histogram":
        out = Histogram(self.count, self.sum_ns, list(self.buckets))
        out.add(other.count, other.sum_ns, other.buckets)
        return out


@dataclass(slots=True)
class CommandTotals:
    requests: int = 0                   # parsed commands: exact (kernel count + the raw path's)
    latency: Histogram = field(default_factory=Histogram)     # the requests with a reply seen

    def merged(self, other: "CommandTotals") -> "CommandTotals":
        return CommandTotals(self.requests + other.requests, self.latency.merged(other.latency))


@dataclass(slots=True)
class InstanceTotals:
    commands: dict = field(default_factory=dict)    # command name -> CommandTotals
    phases: dict = field(default_factory=dict)      # phase name -> Histogram
    stalls: dict = field(default_factory=dict)      # stall class -> [count, seconds]
    fsync: Histogram = field(default_factory=Histogram)

    def add_engine(self, stats, raw_counts: dict, raw_latencies: tuple = ({}, {})) -> None:
        """One probe session's figures of this instance: an engine InstanceStats (or None),
        {command: count} of the commands the raw path counted and ({command: (fields, histogram)},
        {phase: (fields, histogram)}) of the requests it timed (engine.raw.RawLatencies.of)."""
        if stats is not None:
            for name, cs in stats.commands.items():
                row = self.commands.setdefault(name, CommandTotals())
                row.requests += cs.count
                row.latency.add(cs.histogram.count, cs.sum_ns, cs.histogram.buckets)
            for name, hist in stats.phases.items():
                self.phases.setdefault(name, Histogram()).add(hist.count, stats.phase_sum_ns.get(name, 0),
                                                              hist.buckets)
        for name, n in raw_counts.items():
            self.commands.setdefault(name, CommandTotals()).requests += n
        commands, phases = raw_latencies
        for name, (fields, hist) in commands.items():
            self.commands.setdefault(name, CommandTotals()).latency.add(hist.count, fields["sum_ns"], hist.buckets)
        for name, (fields, hist) in phases.items():
            self.phases.setdefault(name, Histogram()).add(hist.count, fields["sum_ns"], hist.buckets)

    def add_stall(self, cls: str, seconds: float) -> None:
        row = self.stalls.setdefault(cls, [0, 0.0])
        row[0] += 1
        row[1] += seconds

    def merged(self, other: "InstanceTotals") -> "InstanceTotals":
        out = InstanceTotals(fsync=self.fsync.merged(other.fsync))
        for mine, theirs, into, empty in ((self.commands, other.commands, out.commands, CommandTotals),
                                          (self.phases, other.phases, out.phases, Histogram)):
            for name in mine.keys() | theirs.keys():
                into[name] = mine.get(name, empty()).merged(theirs.get(name, empty()))
        for cls in self.stalls.keys() | other.stalls.keys():
            a, b = self.stalls.get(cls, [0, 0.0]), other.stalls.get(cls, [0, 0.0])
            out.stalls[cls] = [a[0] + b[0], a[1] + b[1]]
        return out


@dataclass(slots=True)
class AgentFigures:
    """Everything a scrape reads: per instance label, and the records the kernel could not deliver."""
    instances: dict = field(default_factory=dict)   # instance label -> InstanceTotals
    lost_events: int = 0
    known_commands: frozenset = frozenset()         # the engine's command table: other names fold into "other"

    def instance(self, label: str) -> InstanceTotals:
        return self.instances.setdefault(label, InstanceTotals())

    def merged(self, other: "AgentFigures") -> "AgentFigures":
        out = AgentFigures(lost_events=self.lost_events + other.lost_events,
                           known_commands=self.known_commands | other.known_commands)
        for label in self.instances.keys() | other.instances.keys():
            out.instances[label] = self.instances.get(label, InstanceTotals()).merged(
                other.instances.get(label, InstanceTotals()))
        return out
