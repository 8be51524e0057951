"""What every view of a run shares: phase names on screen, what counts as a big key, orderings.

Numbers are formatted by tracer.units (one unit convention for every view).
"""
from __future__ import annotations

from tracer.stitch.model import PHASES

PHASE_LABELS = {"socket_queue": "socket queue", "wait": "wait", "exec": "exec", "reply_write": "reply write"}
PHASE_SHORT = {"socket_queue": "queue", "wait": "wait", "exec": "exec", "reply_write": "reply"}
BIG_KEY_MIN_BYTES = 1000  # smaller replies are not worth calling a key big


def phase_values(phases) -> dict:
    """A request's [(phase, us)] or a run's {phase: us} -> {phase: us} over PHASES (0 when unknown)."""
    pairs = phases.items() if isinstance(phases, dict) else phases
    found = dict(pairs or ())
    return {p: float(found.get(p) or 0) for p in PHASES}


def by_count(commands: dict) -> list:
    """(name, CommandStats), busiest first."""
    return sorted(commands.items(), key=lambda kv: (-kv[1].count, kv[0]))


def longest_first(stalls: list) -> list:
    return sorted(stalls, key=lambda s: (-s.duration_ms, s.start_s))


def big_keys(keys: list) -> list:
    return [kv for kv in keys if (kv[1] or 0) >= BIG_KEY_MIN_BYTES]
