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
from tracer.analyze.patterns.common import CLASS, FILL, OTHER, READ, TXN, UPDATE, Written, client_of, request_ts
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
        self.written = Written(options.max_keys)        # one table of written keys for the two that need it
        self.stampede = StampedeDetector(options)
        self.penetration = PenetrationDetector(options, self.written)
        self.avalanche = AvalancheDetector(options, self.written)
        self.race = RaceDetector(options)
        self.hot_key = HotKeyDetector(options, counts=hot_counts)
        self.big_value = BigValueDetector(options)
        self.requests = 0
        self.big_bytes = options.big_value_bytes

    def on_request(self, req) -> None:
        """The one dispatch: each detector hears only the requests of the classes it uses (this runs
        once per request; benchmarks/patterns_cost.py)."""
        self.requests += 1
        key = req.key
        cls = CLASS.get(req.command, OTHER)
        race = self.race
        client = req.client or client_of(req)
        if key is None:
            if cls == TXN or client in race.clients:
                race.on_request(req, request_ts(req), client, cls)
            elif req.command == "CLIENT TRACKING":
                self.hot_key.on_tracking(client)
            return
        ts = req.exec_start_ts or request_ts(req)
        if cls == READ:
            nil = req.reply_type == "nil"
            if nil:
                self.stampede.on_miss(key, ts, client)
                self.avalanche.on_miss(key, ts, client)
            self.penetration.on_read(key, nil, ts, client)
            race.on_request(req, ts, client, cls)
        elif cls == FILL or cls == UPDATE:
            if cls == FILL:
                self.written.on_fill(key, ts)
                self.stampede.on_fill(key, ts, client)
            else:
                self.written.on_update(key)
            self.penetration.on_write(key)
            race.on_request(req, ts, client, cls)
        elif cls == TXN or client in race.clients:
            race.on_request(req, ts, client, cls)
        self.hot_key.on_keyed(key, ts, cls == READ)
        if req.reply_bytes >= self.big_bytes:
            self.big_value.on_reply(key, req.reply_bytes, ts, client)

    def on_invalidate(self, invalidation) -> None:
        """A CLIENT TRACKING invalidation push some client received (stitch.model.Invalidation)."""
        for key in invalidation.keys:
            self.hot_key.on_invalidate(key, invalidation.client)

    def on_info(self, info) -> None:
        """A sample of the target's INFO (kernel.info.InfoAt): corroborating counters."""
        self.avalanche.on_info(info.ts, info.sample)

    def results(self) -> list[Pattern]:
        """Every pattern found, the worst of each kind first (a short list shows every kind), then the rest."""
        kind = self.input
        per_kind = [self.stampede.results(kind), self.race.results(kind), self.avalanche.results(kind),
                    self.penetration.results(kind), self.hot_key.results(kind, self.requests),
                    self.big_value.results(kind)]
        rounds = max((len(found) for found in per_kind), default=0)
        return [found[i] for i in range(rounds) for found in per_kind if i < len(found)]
