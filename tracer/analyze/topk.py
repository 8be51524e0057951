"""Bounded top-K tables of keys: counts (hot keys) and largest values (big keys)."""
from __future__ import annotations

KEY_CAP = 2000
EVICT_DIV = 2           # a full top-K table drops at least 1/EVICT_DIV of its entries at once


class SpaceSaving:
    """Approximate top-K counts in at most `cap` entries (space-saving with batch eviction:
    a key entering a full table starts at the largest count evicted so far, an upper bound)."""

    __slots__ = ("cap", "counts", "floor")

    def __init__(self, cap: int = KEY_CAP):
        self.cap = cap
        self.counts: dict = {}
        self.floor = 0

    def add(self, key, n: int = 1) -> None:
        counts = self.counts
        c = counts.get(key)
        if c is not None:
            counts[key] = c + n
            return
        if len(counts) >= self.cap:
            self._evict()
        counts[key] = self.floor + n

    def _evict(self) -> None:
        # drop every key at or below the median count: at least half of the table, and ties go
        # together, so the result does not depend on insertion order. Half, not less: with many
        # distinct keys (every request a new key) the sort + rebuild runs once per cap/2 new keys.
        n = max(1, self.cap // EVICT_DIV)
        threshold = sorted(self.counts.values())[n - 1]
        self.floor = max(self.floor, threshold)
        self.counts = {k: v for k, v in self.counts.items() if v > threshold}

    def top(self, n: int) -> list:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def __len__(self) -> int:
        return len(self.counts)


class TopMax:
    """The keys with the largest value seen (e.g. reply bytes), in at most `cap` entries."""

    __slots__ = ("cap", "values", "floor")

    def __init__(self, cap: int = KEY_CAP):
        self.cap = cap
        self.values: dict = {}
        self.floor = 0          # values at or below it were dropped (or would be)

    def add(self, key, value: int) -> None:
        values = self.values
        v = values.get(key)
        if v is not None:
            if value > v:
                values[key] = value
            return
        if len(values) >= self.cap:
            if value <= self.floor:
                return          # would be evicted right away
            n = max(1, self.cap // EVICT_DIV)     # at least half the table (see SpaceSaving)
            self.floor = max(self.floor, sorted(values.values())[n - 1])
            self.values = values = {k: v for k, v in values.items() if v > self.floor}
            if value <= self.floor:
                return
        values[key] = value

    def top(self, n: int) -> list:
        return sorted(self.values.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def __len__(self) -> int:
        return len(self.values)
