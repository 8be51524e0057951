"""Prometheus /metrics: a custom collector that reads the agent's figures at scrape time.

Nothing is observed per request: each scrape takes one AgentFigures (the kernel's aggregates read
then, plus the folded figures of earlier probe sessions) and maps the kernel's log-linear buckets to
the fixed Prometheus buckets below. Counts and sums are exact; a kernel bucket is counted under the
first Prometheus bound at or above the largest value it can hold, so a cumulative bucket never
counts a value above its bound (a value within 1/16 below a bound may be counted in the next one).

Labels are bounded: instance (one per traced redis-server), command (the engine's command table,
at most COMMAND_LABELS of them; names beyond that or unknown to Redis are "other"), phase, class.
Never a key or a client address.
"""
from __future__ import annotations

import re
from bisect import bisect_left

from tracer.agent.figures import AgentFigures, Histogram
from tracer.engine.histogram import bucket_bounds
from tracer.engine.layout import NBUCKETS

PREFIX = "redis_tracer"
COMMAND_LABELS = 64         # distinct command label values per agent; the rest fold into OTHER_LABEL
OTHER_LABEL = "other"
COMMAND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_|.-]{0,31}")   # the engine's "(other)" row is OTHER_LABEL too
# upper bounds in seconds: from a fast GET on loopback to a multi-second stall
LATENCY_BOUNDS_S = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FSYNC_BOUNDS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0)


def bucket_map(bounds_s) -> list:
    """For each kernel bucket, the index of the Prometheus bucket it is counted in (len(bounds): +Inf)."""
    bounds_ns = [round(b * 1e9) for b in bounds_s]
    return [bisect_left(bounds_ns, bucket_bounds(idx)[1] - 1) for idx in range(NBUCKETS)]


class CommandLabels:
    """Command name -> label value. Sticky: a command keeps its label for the agent's life, so a
    series never moves between labels (its counter would seem to fall)."""

    def __init__(self, cap: int = COMMAND_LABELS):
        self.cap = cap
        self.labels: dict = {}

    def __call__(self, name: str, known) -> str:
        label = self.labels.get(name)
        if label is not None:
            return label
        if name not in known or not COMMAND_NAME.fullmatch(name):
            return OTHER_LABEL      # not remembered: garbage names must not grow this table
        label = self.labels[name] = name.lower() if len(self.labels) < self.cap else OTHER_LABEL
        return label


class AgentCollector:
    """prometheus_client collector; read() -> AgentFigures, called once per scrape."""

    def __init__(self, read, command_cap: int = COMMAND_LABELS):
        self.read = read
        self.command_label = CommandLabels(command_cap)
        self.latency_map = bucket_map(LATENCY_BOUNDS_S)
        self.fsync_map = bucket_map(FSYNC_BOUNDS_S)

    def describe(self):
        return []       # no describe-time scrape (it would read the kernel's maps at registration)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        figures: AgentFigures = self.read()
        requests = CounterMetricFamily(f"{PREFIX}_requests", "Requests parsed, by command (exact).",
                                       labels=("instance", "command"))
        duration = HistogramMetricFamily(f"{PREFIX}_request_duration_seconds",
                                         "Request latency, arrival in the socket to the reply written.",
                                         labels=("instance", "command"))
        phases = HistogramMetricFamily(f"{PREFIX}_phase_seconds",
                                       "Time of each request spent in each phase of its path.",
                                       labels=("instance", "phase"))
        stalls = CounterMetricFamily(f"{PREFIX}_stalls", "Main-thread stalls, by class.",
                                     labels=("instance", "class"))
        stall_s = CounterMetricFamily(f"{PREFIX}_stall_seconds", "Time the main thread was stalled, by class.",
                                      labels=("instance", "class"))
        fsync = HistogramMetricFamily(f"{PREFIX}_fsync_seconds", "fsync/fdatasync durations of the traced servers.",
                                      labels=("instance",))
        lost = CounterMetricFamily(f"{PREFIX}_lost_events", "Probe records neither ring buffer could take.")
        lost.add_metric((), figures.lost_events)
        for instance, totals in sorted(figures.instances.items()):
            folded: dict = {}
            for name, row in totals.commands.items():
                label = self.command_label(name, figures.known_commands)
                acc = folded.get(label)
                folded[label] = row if acc is None else acc.merged(row)
            for label, row in sorted(folded.items()):
                requests.add_metric((instance, label), row.requests)
                duration.add_metric((instance, label), *self._buckets(row.latency, self.latency_map,
                                                                      LATENCY_BOUNDS_S))
            for phase, hist in sorted(totals.phases.items()):
                phases.add_metric((instance, phase), *self._buckets(hist, self.latency_map, LATENCY_BOUNDS_S))
            for cls, (n, seconds) in sorted(totals.stalls.items()):
                stalls.add_metric((instance, cls), n)
                stall_s.add_metric((instance, cls), seconds)
            fsync.add_metric((instance,), *self._buckets(totals.fsync, self.fsync_map, FSYNC_BOUNDS_S))
        return [requests, duration, phases, stalls, stall_s, fsync, lost]

    @staticmethod
    def _buckets(hist: Histogram, mapping: list, bounds_s) -> tuple[list, float]:
        """([(le, cumulative count)...,("+Inf", count)], sum in seconds) of a kernel-bucket histogram."""
        per = [0] * (len(bounds_s) + 1)
        for idx, n in enumerate(hist.buckets):
            if n:
                per[mapping[idx]] += n
        out, cum = [], 0
        for bound, n in zip(bounds_s, per):
            cum += n
            out.append((repr(bound), cum))
        out.append(("+Inf", cum + per[-1]))
        return out, hist.sum_ns / 1e9


def parse_listen(text: str) -> tuple[str, int]:
    """'ADDR:PORT' ('[::1]:9386', ':9386' for every address) -> (addr, port); TracerError when not."""
    from tracer.errors import UsageError

    addr, sep, port = text.rpartition(":")
    addr = addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r} is not ADDR:PORT", "e.g. --listen 127.0.0.1:9386")
    return addr or "0.0.0.0", int(port)


def serve(collector: AgentCollector, addr: str, port: int):
    """/metrics on addr:port in a daemon thread; returns the server (shutdown() stops it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from tracer.errors import TracerError

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        started = start_http_server(port, addr=addr, registry=registry)
    except OSError as err:
        raise TracerError(f"cannot serve /metrics on {addr}:{port}: {err.strerror or err}",
                          "choose another --listen ADDR:PORT") from None
    return started[0] if isinstance(started, tuple) else started
