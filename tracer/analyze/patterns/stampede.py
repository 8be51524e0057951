"""Cache stampede (breakdown): within a short window many different clients get a nil reply for the
same key, then one or more of them SET it — every one of them went to the database for it."""
from __future__ import annotations

from tracer.analyze.patterns.common import NS_PER_MS, Bounded, ms, sample
from tracer.options import PatternOptions
from tracer.schema import Pattern
from tracer.units import fmt_ms

ADVICE = ["let one caller rebuild the key: a mutex (SET lock:<key> <id> NX PX <ms>) or request coalescing "
          "(single-flight; JetCache penetrationProtect), the others wait or serve the stale value",
          "refresh hot keys before they expire (early refresh), or keep them without a TTL and store a logical "
          "expiry time in the value, rebuilt in the background"]
MAX_CLIENTS = 256   # distinct clients remembered per episode


class _Episode:
    __slots__ = ("first_miss", "last_miss", "clients", "misses", "first_set", "setters")

    def __init__(self, ts):
        self.first_miss = self.last_miss = ts
        self.clients: set = set()
        self.misses = 0
        self.first_set = 0
        self.setters: set = set()


class _Found:
    """One key's stampedes: how many, and the largest."""

    __slots__ = ("episodes", "worst")

    def __init__(self, ep: _Episode):
        self.episodes = 0
        self.worst = ep


class StampedeDetector:
    def __init__(self, options: PatternOptions = PatternOptions()):
        self.window_ns = int(options.stampede_window_ms * NS_PER_MS)
        self.min_clients = options.stampede_min_clients
        self.listed = options.max_listed
        self.episodes = Bounded(options.max_keys)      # key -> _Episode, the latest per key
        self.found: dict = {}                           # key -> _Found (at most max_keys)
        self.max_found = options.max_keys

    def on_miss(self, key, ts: int, client: str) -> None:
        ep = self.episodes.touch(key)
        if ep is None or ep.first_set or ts - ep.first_miss > self.window_ns:
            ep = self.episodes.put(key, _Episode(ts))
        if len(ep.clients) < MAX_CLIENTS:
            ep.clients.add(client)
        ep.misses += 1
        if ts > ep.last_miss:
            ep.last_miss = ts

    def on_fill(self, key, ts: int, client: str) -> None:
        ep = self.episodes.get(key)
        if ep is None or ts < ep.first_miss:
            return
        if not ep.first_set:
            if ts - ep.last_miss > self.window_ns:
                return          # refilled long after: not a rebuild the misses caused
            ep.first_set = ts
            if len(ep.clients) >= self.min_clients:
                self._count(key, ep)
        if len(ep.setters) < MAX_CLIENTS:
            ep.setters.add(client)

    def _count(self, key, ep: _Episode) -> None:
        found = self.found.get(key)
        if found is None:
            if len(self.found) >= self.max_found:
                return
            found = self.found[key] = _Found(ep)
        found.episodes += 1
        if len(ep.clients) > len(found.worst.clients):
            found.worst = ep

    def results(self, input_: str = "full") -> list[Pattern]:
        ranked = sorted(self.found.items(), key=lambda kv: (-len(kv[1].worst.clients), -kv[1].episodes, kv[0]))
        out = []
        for key, found in ranked[:self.listed]:
            ep = found.worst
            missing, setters = len(ep.clients), len(ep.setters)
            window, to_set = ms(ep.last_miss - ep.first_miss), ms(ep.first_set - ep.first_miss)
            evidence = [f"{missing} clients got nil for {key} within {fmt_ms(window)}; the first SET came "
                        f"{fmt_ms(to_set)} after the first miss"
                        + (f", {setters} clients SET it" if setters > 1 else "")]
            if found.episodes > 1:
                evidence.append(f"it happened {found.episodes} times")
            out.append(Pattern(kind="stampede", keys=[key], clients=sample(ep.clients, self.listed), window_ms=window,
                               count=found.episodes, evidence=evidence, advice=list(ADVICE), input=input_,
                               figures={"missing_clients": missing, "time_to_first_set_ms": to_set,
                                        "setters": setters}))
        return out
