"""Fixed log-linear latency histogram (HDR-style), in nanoseconds.

Values below 128 ns get one bucket each; above that every power of two is split into
64 linear sub-buckets, so a bucket is at most 1/64 (1.6 %) of its lower bound wide and the
midpoint we report is within 0.8 % of any value in it. Values are clamped to 1000 s.
The bucket layout is fixed, so memory is constant (2240 counters), merging is exact and the
result never depends on the order values were added in.
"""
from __future__ import annotations

import math

SUB_BITS = 6
SUB = 1 << SUB_BITS                 # linear sub-buckets per power of two
MAX_NS = 1000 * 1_000_000_000        # 1000 s: larger values are clamped (max stays exact)
MIN_NS = 1_000                       # 1 us: the low end of the intended range (smaller values still count)


def bucket_index(v: int) -> int:
    if v < 2 * SUB:
        return v if v > 0 else 0
    e = v.bit_length() - (SUB_BITS + 1)
    return (e << SUB_BITS) + (v >> e)


def bucket_bounds(idx: int) -> tuple[int, int]:
    """[low, high) in ns of bucket idx."""
    if idx < 2 * SUB:
        return idx, idx + 1
    e = (idx >> SUB_BITS) - 1
    m = idx - (e << SUB_BITS)
    return m << e, (m + 1) << e


NBUCKETS = bucket_index(MAX_NS) + 1
_MAX_IDX = NBUCKETS - 1
_LINEAR = 2 * SUB                   # below: one bucket per value
_SHIFT = SUB_BITS + 1


def nearest_rank(p: float, count: int) -> int:
    """1-based rank of percentile p (0-100) among count values: ceil(p/100 * count), in [1, count]
    (with a tolerance so that 99.9 % of 10000 is rank 9990, not 9991 through float rounding)."""
    return min(max(math.ceil(p * count / 100.0 - 1e-9), 1), count)


def bucket_value(idx: int) -> int:
    lo, hi = bucket_bounds(idx)
    return lo + (hi - 1 - lo) // 2


class LatencyHistogram:
    __slots__ = ("counts", "count", "sum", "min", "max", "_lo", "_hi")

    def __init__(self):
        self.counts = [0] * NBUCKETS
        self.count = 0
        self.sum = 0
        self.min = 0
        self.max = 0
        self._lo = NBUCKETS     # lowest / highest non-empty bucket (NBUCKETS, -1 when empty)
        self._hi = -1

    def add(self, ns: int, n: int = 1) -> None:
        # hot path (once per request): bucket_index() inlined, one branch per bound
        if ns.__class__ is not int:
            ns = int(ns)
        if ns < _LINEAR:
            if ns < 0:
                ns = 0
            idx = ns
        elif ns < MAX_NS:
            e = ns.bit_length() - _SHIFT
            idx = (e << SUB_BITS) + (ns >> e)
        else:
            idx = _MAX_IDX
        self.counts[idx] += n
        if not self.count or ns < self.min:
            self.min = ns
        if ns > self.max:
            self.max = ns
        self.count += n
        self.sum += ns * n
        if idx < self._lo:
            self._lo = idx
        if idx > self._hi:
            self._hi = idx

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        if other.count == 0:
            return self
        counts = self.counts
        for i in range(other._lo, other._hi + 1):
            c = other.counts[i]
            if c:
                counts[i] += c
        if self.count == 0:
            self.min, self.max = other.min, other.max
        else:
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        self.count += other.count
        self.sum += other.sum
        self._lo = min(self._lo, other._lo)
        self._hi = max(self._hi, other._hi)
        return self

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def percentile(self, p: float) -> int:
        """Value in ns at percentile p (0-100): the midpoint of the bucket holding the value of
        rank ceil(p/100 * count), clamped to the exact [min, max]. 0 when empty."""
        return self.percentiles((p,))[0]

    def percentiles(self, ps) -> list[int]:
        """Several percentiles in one pass over the buckets."""
        if self.count == 0:
            return [0 for _ in ps]
        order = sorted(range(len(ps)), key=lambda i: ps[i])
        out = [0] * len(ps)
        counts = self.counts
        cum = 0                 # number of values in buckets below idx
        idx = self._lo
        for i in order:
            p = float(ps[i])
            if p >= 100.0:
                out[i] = self.max
                continue
            if p <= 0.0:
                out[i] = self.min
                continue
            rank = nearest_rank(p, self.count)
            while cum + counts[idx] < rank:
                cum += counts[idx]
                idx += 1
            out[i] = min(max(bucket_value(idx), self.min), self.max)
        return out

    def sparkline(self, width: int, lo_ns: int | None = None, hi_ns: int | None = None) -> list[int]:
        """Bucket counts folded into `width` columns over [lo_ns, hi_ns] (default: the occupied
        range), on the histogram's log-linear axis. Values outside the range go to the edge columns."""
        width = max(1, int(width))
        cols = [0] * width
        if self.count == 0:
            return cols
        lo = self._lo if lo_ns is None else bucket_index(min(max(int(lo_ns), 0), MAX_NS))
        hi = self._hi if hi_ns is None else bucket_index(min(max(int(hi_ns), 0), MAX_NS))
        if hi < lo:
            lo, hi = hi, lo
        n = hi - lo + 1
        counts = self.counts
        for i in range(self._lo, self._hi + 1):
            c = counts[i]
            if not c:
                continue
            j = min(max(i, lo), hi)
            cols[(j - lo) * width // n] += c
        return cols

    def __len__(self) -> int:
        return self.count
