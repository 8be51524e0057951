"""Cache-usage patterns read off the request stream: stampede, penetration, avalanche, read-modify-write
races, hot-key skew and big values read often (one module per detector, thresholds in
tracer.options.PatternOptions).

`PatternDetectors` is what the analysis feeds: one stitched Request at a time, O(1) amortised, with
bounded state (each detector caps its keys/clients and evicts the least recently seen). `results()`
lists what was found as schema.Pattern views, each saying whether its input was every request
("full") or only sampled/slow ones ("sampled").
"""
from __future__ import annotations

from tracer.analyze.patterns.avalanche import AvalancheDetector
from tracer.analyze.patterns.big_value import BigValueDetector
from tracer.analyze.patterns.common import CLASS, OTHER, client_of, request_ts
from tracer.analyze.patterns.hot_key import HotKeyDetector
from tracer.analyze.patterns.penetration import PenetrationDetector
from tracer.analyze.patterns.race import RaceDetector
from tracer.analyze.patterns.stampede import StampedeDetector
from tracer.options import PatternOptions
from tracer.schema import Pattern

FULL, SAMPLED = "full", "sampled"


class PatternDetectors:
    """complete: every request reaches on_request (today's only mode); False once only sampled/slow records
    do (the kernel-side engine), which the views then say."""

    def __init__(self, options: PatternOptions = PatternOptions(), hot_counts=None, complete: bool = True):
        self.input = FULL if complete else SAMPLED
        self.stampede = StampedeDetector(options)
        self.penetration = PenetrationDetector(options)
        self.avalanche = AvalancheDetector(options)
        self.race = RaceDetector(options)
        self.hot_key = HotKeyDetector(options, counts=hot_counts)
        self.big_value = BigValueDetector(options)
        self.requests = 0
        self._all = (self.stampede.on_request, self.penetration.on_request, self.avalanche.on_request,
                     self.race.on_request, self.hot_key.on_request, self.big_value.on_request)

    def on_request(self, req) -> None:
        self.requests += 1
        ts = request_ts(req)
        client = client_of(req)
        cls = CLASS.get(req.command, OTHER)
        for detect in self._all:
            detect(req, ts, client, cls)

    def results(self) -> list[Pattern]:
        """Every pattern found, the worst of each kind first (a short list shows every kind), then the rest."""
        kind = self.input
        per_kind = [self.stampede.results(kind), self.race.results(kind), self.avalanche.results(kind),
                    self.penetration.results(kind), self.hot_key.results(kind, self.requests),
                    self.big_value.results(kind)]
        rounds = max((len(found) for found in per_kind), default=0)
        return [found[i] for i in range(rounds) for found in per_kind if i < len(found)]
