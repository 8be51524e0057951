"""A time window of a recording (`report`/`diagnose --since/--until`) and the span a recording covers.

A bound is seconds from the start of the recording (`--since 2.5`), or an absolute time: epoch
seconds (`--since 1764653043`) or an ISO 8601 local or zoned time (`--since 2026-12-02T05:44:03`,
`--since 05:44:03` for today). The start is the probes' attach time the header keeps (older files:
the first record). Record timestamps are the kernel's monotonic clock; the header's clock offset
turns absolute times into it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tracer.errors import UsageError

NS_PER_S = 1_000_000_000
EPOCH_MIN_S = 100_000_000          # a bare number at least this large is epoch seconds (1973 on)


@dataclass(frozen=True, slots=True)
class Bound:
    """One --since/--until value: seconds from the start, or an absolute wall time (epoch seconds)."""

    seconds: float
    absolute: bool


def parse_bound(text: str, option: str = "--since") -> Bound:
    text = str(text).strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if value < 0 or value != value or value == float("inf"):
            raise UsageError(f"{option} must be seconds from the start (>= 0) or a time, not {text!r}")
        return Bound(value, value >= EPOCH_MIN_S)
    try:
        if len(text) <= 8 and text.count(":") in (1, 2):      # HH:MM[:SS]: today, local time
            when = dt.datetime.combine(dt.date.today(), dt.time.fromisoformat(text))
        else:
            when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is neither seconds from the start nor a time "
                         "(e.g. 2.5, 2026-12-02T05:44:03, 05:44:03, 1764653043)") from None
    return Bound(when.timestamp(), True)


@dataclass(frozen=True, slots=True)
class Window:
    since: Bound | None = None
    until: Bound | None = None

    @classmethod
    def from_args(cls, args) -> "Window":
        since, until = getattr(args, "since", None), getattr(args, "until", None)
        window = cls(parse_bound(since, "--since") if since is not None else None,
                     parse_bound(until, "--until") if until is not None else None)
        s, u = window.since, window.until
        if s is not None and u is not None and s.absolute == u.absolute and u.seconds <= s.seconds:
            raise UsageError(f"--until ({until}) must come after --since ({since})")
        return window

    @property
    def whole(self) -> bool:
        return self.since is None and self.until is None

    def resolve(self, start_ns: int, mono_to_wall_ns: int) -> tuple[int, int | None]:
        """(from, to) in the records' clock (monotonic ns); to None: up to the end."""
        def at(bound: Bound) -> int:
            if bound.absolute:
                return int(bound.seconds * NS_PER_S) - mono_to_wall_ns
            return start_ns + int(bound.seconds * NS_PER_S)
        return (at(self.since) if self.since else 0), (at(self.until) if self.until else None)


def covered_s(attached_ns: int | None, detached_ns: int | None, first_ns: int, last_ns: int,
              lo_ns: int = 0, hi_ns: int | None = None) -> float:
    """Seconds a recording (or its window) covers: attach to detach where the file says them (a quiet
    6 s recording is 6 s, not the 0.1 s between its first and last request), else first to last record."""
    start = attached_ns or first_ns
    end = detached_ns or last_ns
    if not start or not end:
        return 0.0
    start = max(start, lo_ns)
    if hi_ns is not None:
        end = min(end, hi_ns)
    return max(0, end - start) / NS_PER_S
