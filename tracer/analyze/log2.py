"""Log2 latency histograms in microseconds, as bcc's tools print them (`biolatency`: `usecs : count
distribution`): bucket i holds values whose bit length is i, so bucket 1 is 0-1 us, 2 is 2-3 us, 3 is
4-7 us, ... Per command and per phase; `report --hist` draws them, `report --json` carries the counts.

Full path: every request's own values (exact). Engine mode: the kernel's log-linear buckets folded
into log2 ones by their midpoints (a kernel bucket is at most 1/16 of its lower bound wide).
"""
from __future__ import annotations

from tracer.stitch.model import PHASES

UNIT = "usecs"
STARS = 40


def log2_index(us: int) -> int:
    """The log2 bucket of a value in microseconds (0 and 1 share bucket 1, as bcc prints them)."""
    return max(1, int(us).bit_length()) if us > 0 else 1


class Log2Histogram:
    __slots__ = ("counts",)

    def __init__(self, counts=None):
        self.counts: list[int] = list(counts or [])

    def add_ns(self, ns: int, n: int = 1) -> None:
        idx = log2_index(ns // 1000)
        counts = self.counts
        if idx >= len(counts):
            counts.extend([0] * (idx + 1 - len(counts)))
        counts[idx] += n

    @property
    def total(self) -> int:
        return sum(self.counts)

    def to_json(self) -> list[int]:
        return list(self.counts)


class Log2Recorder:
    """Fed every stitched request (an on_request callback): per-command and per-phase log2 histograms."""

    def __init__(self):
        self.commands: dict[str, Log2Histogram] = {}
        self.phases: dict[str, Log2Histogram] = {p: Log2Histogram() for p in PHASES}

    def on_request(self, req) -> None:
        latency = req.latency_ns
        if latency is None:
            return
        hist = self.commands.get(req.command)
        if hist is None:
            hist = self.commands[req.command or "?"] = Log2Histogram()
        hist.add_ns(latency)
        for phase, ns in zip(PHASES, (req.socket_queue_ns, req.wait_ns, req.exec_ns, req.reply_write_ns)):
            if ns is not None and ns >= 0:
                self.phases[phase].add_ns(ns)


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
