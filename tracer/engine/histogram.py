"""The kernel's log-linear histogram (probes/engine.c eng_bucket): one bucket per ns below 32 ns,
then 16 per power of two up to 2^36 ns (68 s; larger values land in the last bucket). A bucket is
at most 1/16 of its lower bound wide, so its midpoint is within 3.2 % of any value in it."""
from __future__ import annotations

from tracer.analyze.histogram import nearest_rank
from tracer.engine.layout import NBUCKETS

SUB_BITS = 4
LINEAR = 2 << SUB_BITS      # 32: one bucket per value below
MAX_NS = (1 << 36) - 1


def bucket_index(v: int) -> int:
    """The bucket the kernel puts v (ns) in."""
    if v < LINEAR:
        return max(v, 0)
    v = min(v, MAX_NS)
    e = v.bit_length() - 1 - SUB_BITS
    return (e << SUB_BITS) + (v >> e)


def bucket_bounds(idx: int) -> tuple[int, int]:
    """[low, high) in ns of bucket idx."""
    if idx < LINEAR:
        return idx, idx + 1
    e = (idx >> SUB_BITS) - 1
    m = idx - (e << SUB_BITS)
    return m << e, (m + 1) << e


def bucket_value(idx: int) -> int:
    lo, hi = bucket_bounds(idx)
    return lo + (hi - 1 - lo) // 2


class EngineHistogram:
    """Bucket counts summed over CPUs; percentiles by nearest rank, reported as bucket midpoints."""

    __slots__ = ("buckets", "count")

    def __init__(self, buckets=None):
        self.buckets = list(buckets) if buckets is not None else [0] * NBUCKETS
        self.count = sum(self.buckets)

    def add(self, other: "EngineHistogram") -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]
        self.count += other.count

    def add_value(self, ns: int) -> None:
        """One value (a request user space timed: the raw path's, never the kernel's per request)."""
        self.buckets[bucket_index(ns)] += 1
        self.count += 1

    def percentile(self, p: float) -> int:
        """Value in ns at percentile p (0-100); 0 when empty."""
        if self.count == 0:
            return 0
        rank = nearest_rank(p, self.count)
        cum = 0
        for idx, n in enumerate(self.buckets):
            cum += n
            if cum >= rank:
                return bucket_value(idx)
        return bucket_value(NBUCKETS - 1)

    def __repr__(self) -> str:
        return f"EngineHistogram(count={self.count}, p50={self.percentile(50)}, p99={self.percentile(99)})"
