"""Hot-key skew: one key takes a request share far above the rest, mostly reads — a client-side cache
(RESP3 CLIENT TRACKING, or a local cache such as Caffeine as an L1 in front of Redis) would take
most of that load off Redis."""
from __future__ import annotations

from tracer.analyze.patterns.common import Bounded, ms
from tracer.analyze.topk import SpaceSaving
from tracer.options import PatternOptions
from tracer.schema import Pattern
from tracer.units import NS_PER_S

ADVICE = ["cache this key in the clients: RESP3 CLIENT TRACKING (server-assisted invalidation, e.g. redis-py "
          "cache_config / Lettuce client-side caching) or a local cache (Caffeine as an L1 in front of Redis) with "
          "a short TTL",
          "if it must stay in Redis: spread the reads over replicas, or copy it into N keys (key#1..key#N) "
          "and read a random copy"]
NEXT_KEYS = 9       # "the rest": the mean of the next keys by count
TRACKING_CLIENTS_MAX = 1024     # clients remembered: those that turned tracking on, and per invalidated key


class _Invalidated:
    __slots__ = ("pushes", "clients")

    def __init__(self):
        self.pushes = 0
        self.clients: set = set()


class HotKeyDetector:
    """counts: the analysis' own per-key request table (SpaceSaving), shared so a request is counted once;
    without it the detector counts by itself."""

    def __init__(self, options: PatternOptions = PatternOptions(), counts: SpaceSaving | None = None):
        self.min_requests = options.hot_min_requests
        self.min_share = options.hot_min_share
        self.skew = options.hot_skew
        self.min_read_ratio = options.hot_min_read_ratio
        self.listed = options.max_listed
        self.own = counts is None
        self.counts = SpaceSaving(options.max_keys) if counts is None else counts
        self.reads = SpaceSaving(options.max_keys)
        self.keyed = 0
        self.first = self.last = 0
        self.tracking_clients: set = set()
        self.invalidated = Bounded(options.max_keys)    # key -> _Invalidated: the pushes naming it

    def on_keyed(self, key, ts: int, read: bool) -> None:
        if ts:
            if not self.first:
                self.first = ts
            self.last = ts
        self.keyed += 1
        if self.own:
            self.counts.add(key)
        if read:
            self.reads.add(key)

    def on_tracking(self, client: str) -> None:
        """A client turned on CLIENT TRACKING (server-assisted client-side caching)."""
        if len(self.tracking_clients) < TRACKING_CLIENTS_MAX:
            self.tracking_clients.add(client)

    def on_invalidate(self, key, client: str) -> None:
        """Redis pushed an invalidation of key to a tracking client."""
        entry = self.invalidated.touch_or_put(key, _Invalidated)
        entry.pushes += 1
        if len(entry.clients) < TRACKING_CLIENTS_MAX:
            entry.clients.add(client)

    def results(self, input_: str = "full", total_requests: int = 0) -> list[Pattern]:
        top = self.counts.top(1 + NEXT_KEYS)
        if not top or not self.keyed:
            return []
        out = []
        rest = [n for _, n in top[1:]]
        mean_rest = sum(rest) / len(rest) if rest else 0.0
        key, n = top[0]
        reads = min(n, self.reads.counts.get(key, 0))
        writes = n - reads
        share = n / self.keyed
        if (n < self.min_requests or share < self.min_share or (rest and n < self.skew * mean_rest)
                or reads < self.min_read_ratio * writes):
            return out
        span_s = max(self.last - self.first, 1) / NS_PER_S
        saved = max(0, reads - writes)      # with invalidation, every write costs one re-read
        total = total_requests or self.keyed
        skew = f"{n / mean_rest:.0f}x the mean of the next {len(rest)} keys" if mean_rest else "the only key"
        evidence = [f"{key}: {n} requests, {share:.0%} of keyed requests, {skew}; "
                    f"{reads} reads / {writes} writes",
                    f"a client-side cache would save about {saved} Redis requests ({saved / total:.0%} of all, "
                    f"{saved / span_s:.0f}/s)"]
        if self.tracking_clients:
            evidence.append(f"{len(self.tracking_clients)} clients turned on CLIENT TRACKING")
        invalidated = self.invalidated.get(key)
        if invalidated is not None:
            evidence.append(f"{key}: {invalidated.pushes:,} invalidations pushed to {len(invalidated.clients)} "
                            f"tracking clients")
        out.append(Pattern(kind="hot-key", keys=[key], clients=[], window_ms=ms(self.last - self.first), count=n,
                           evidence=evidence, advice=list(ADVICE), input=input_,
                           figures={"share": round(share, 3), "reads": reads, "writes": writes,
                                    "read_write_ratio": round(reads / writes, 2) if writes else None,
                                    "skew": round(n / mean_rest, 1) if mean_rest else None,
                                    "saved_requests": saved, "saved_share": round(saved / total, 3),
                                    "saved_per_s": round(saved / span_s, 1)}))
        if invalidated is not None:
            out[-1].figures.update(invalidations=invalidated.pushes, invalidated_clients=len(invalidated.clients))
        return out
