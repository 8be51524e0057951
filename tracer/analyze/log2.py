"""Log2 latency histograms in microseconds, as bcc's tools print them (`biolatency`: `usecs : count
distribution`): bucket i holds values whose bit length is i, so bucket 1 is 0-1 us, 2 is 2-3 us, 3 is
4-7 us, ... Per command and per phase; `report --hist` draws them, `report --json` carries the counts.

Per command from the log-linear histograms the analysis keeps anyway (the Analyzer's, 64 sub-buckets
per power of two, or the kernel's, 16), folded into log2 buckets by their midpoints; per phase from
every stitched request's own values (PhaseLog2) on the full path, from the kernel's phase histograms
in engine mode.
"""
from __future__ import annotations

from operator import attrgetter

from tracer.stitch.model import PHASES

UNIT = "usecs"
STARS = 40
SLOTS = 56                  # a u64 of ns is below 2^54 us: every difference of record timestamps fits


def log2_index(us: int) -> int:
    """The log2 bucket of a value in microseconds (0 and 1 share bucket 1, as bcc prints them)."""
    return max(1, int(us).bit_length()) if us > 0 else 1


class Log2Histogram:
    __slots__ = ("counts",)

    def __init__(self, counts=None):
        self.counts: list[int] = list(counts or [])

    def add_ns(self, ns: int, n: int = 1) -> None:
        idx = min(log2_index(ns // 1000), SLOTS - 1)
        counts = self.counts
        if idx >= len(counts):
            counts.extend([0] * (idx + 1 - len(counts)))
        counts[idx] += n

    @property
    def total(self) -> int:
        return sum(self.counts)

    def to_json(self) -> list[int]:
        """The counts up to the last non-empty bucket."""
        last = max((i for i, n in enumerate(self.counts) if n), default=-1)
        return list(self.counts[:last + 1])


_TIMES = attrgetter("reply_end_ts", "arrival_ts", "read_start_ts", "wake_ts", "read_end_ts", "exec_start_ts",
                    "exec_end_ts", "reply_start_ts")


class PhaseLog2:
    """Fed every stitched request (an on_request callback): a log2 histogram per phase. The phase
    arithmetic is stitch.model.Request's properties inlined: `report --json` pays it per request."""

    def __init__(self):
        self.phases: dict[str, Log2Histogram] = {p: Log2Histogram([0] * SLOTS) for p in PHASES}
        self._sq, self._wait, self._exec, self._rw = (self.phases[p].counts for p in PHASES)

    def on_request(self, req) -> None:
        end, arr, rs, wake, re_, es, ee, ps = _TIMES(req)
        if rs:
            woke = arr and wake and arr <= wake <= rs
            if arr:
                sq = (wake if woke else rs) - arr
                self._sq[(sq // 1000).bit_length() or 1 if sq > 0 else 1] += 1
            wait = (rs - wake) if woke else 0
            if es and re_ and es > re_:
                wait += es - re_
            if ps and ee and ps > ee:
                wait += ps - ee
            self._wait[(wait // 1000).bit_length() or 1] += 1
        if es and ee:
            ex = ee - es
            self._exec[(ex // 1000).bit_length() or 1 if ex > 0 else 1] += 1
        if ps and end:
            rw = end - ps
            self._rw[(rw // 1000).bit_length() or 1 if rw > 0 else 1] += 1


def from_buckets(buckets, bucket_value) -> Log2Histogram:
    """A log-linear histogram's buckets (counts by index, bucket_value(index) -> ns) as a log2 one."""
    out = Log2Histogram()
    for idx, n in enumerate(buckets):
        if n:
            out.add_ns(bucket_value(idx), n)
    return out


def histograms_json(commands: dict, phases: dict) -> dict:
    """The `histograms` field of `report --json`: counts per log2 bucket (index i: [2^(i-1), 2^i - 1] us)."""
    return {"unit": UNIT, "bucket": "i: [2^(i-1), 2^i - 1] us; 0 and 1 us in 1",
            "commands": {name: h.to_json() for name, h in sorted(commands.items()) if h.total},
            "phases": {name: h.to_json() for name, h in phases.items() if h.total}}


def render(counts: list[int], unit: str = UNIT) -> list[str]:
    """bcc's print_log2_hist: one line per bucket from the first up to the last non-empty one."""
    last = max((i for i, n in enumerate(counts) if n), default=0)
    if not last:
        return []
    top = max(counts)
    lines = [f"     {unit:<19} : count     distribution"]
    for i in range(1, last + 1):
        low, high = (1 << i) >> 1, (1 << i) - 1
        if low == high:
            low -= 1
        n = counts[i] if i < len(counts) else 0
        stars = n * STARS // top if top else 0
        lines.append(f"{low:>10} -> {high:<10} : {n:<8} |{'*' * stars:<{STARS}}|")
    return lines
