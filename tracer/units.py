"""The one unit convention, and every formatting of times, sizes, counts and shares.

Numbers: timestamps and durations are int nanoseconds inside the pipeline; a view's JSON gives
them as floats rounded to 3 decimals in the unit its name ends with (`_us`, `_ms`, `_s`); shares
are 0..1. Text: `fmt_*` for screens and summaries (compact: '85µs', '1.24ms', '22.0MB'), `say_*`
for sentences (evidence: '1200 ms', '5.0 MB', '40%'). Sizes are decimal (1 MB = 10^6 bytes) in both.
"""
from __future__ import annotations

import math

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


# -- numbers for JSON -------------------------------------------------------------------------------
def r3(x) -> float:
    return round(float(x), 3)


def ns_to_us(ns) -> float:
    return round(ns / 1000.0, 3)


def ns_to_ms(ns) -> float:
    return round(ns / NS_PER_MS, 3)


def ns_to_s(ns) -> float:
    return round(ns / NS_PER_S, 3)


# -- compact text, for screens and summaries -------------------------------------------------------------
def fmt_us(us) -> str:
    """Latency in µs -> '85µs', '1.24ms', '312ms', '1.52s'; '-' when unknown."""
    if us is None:
        return "-"
    try:
        us = float(us)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(us):
        return "-"
    if us < 1000:
        return f"{us:.0f}µs"
    ms = us / 1000
    if ms < 10:
        return f"{ms:.2f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms" if ms >= 100 else f"{ms:.1f}ms"
    return f"{ms / 1000:.2f}s"


def fmt_ms(ms) -> str:
    return "-" if ms is None else fmt_us(float(ms) * 1000)


def fmt_count(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    if abs(n) < 1_000_000:
        return f"{n:,.0f}"
    if abs(n) < 1_000_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e9:.1f}G"


def fmt_rate(r) -> str:
    if r is None:
        return "-"
    r = float(r)
    if r == 0:
        return "0"
    if r < 10:
        return f"{r:.1f}"
    return fmt_count(r)


def fmt_bytes(n, sep: str = "") -> str:
    """1234567 -> '1.2MB' (decimal units; sep=' ' for sentences)."""
    if n is None:
        return "-"
    n = float(n)
    if n < 1_000:
        return f"{n:.0f}{sep}B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:.1f}{sep}{unit}"
    return f"{n:.1f}{sep}GB"


def fmt_pct(share) -> str:
    """A share 0..1 -> '40%', '<1%'."""
    if share is None:
        return "-"
    pct = float(share) * 100
    if pct and pct < 1:
        return "<1%"
    return f"{pct:.0f}%"


# -- text for sentences -----------------------------------------------------------------------------------
def say_ms(ns) -> str:
    """ns -> '108.587 ms', '1200 ms': exact to the µs, no trailing zeros."""
    return f"{ns / NS_PER_MS:.3f}".rstrip("0").rstrip(".") + " ms"


def say_pct(part, whole) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "?%"


def say_bytes(n: int) -> str:
    return fmt_bytes(n, sep=" ")
