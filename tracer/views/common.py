"""What every view of a run shares: phase names on screen, what counts as a big key, orderings.

Numbers are formatted by tracer.units (one unit convention for every view).
"""
from __future__ import annotations

from tracer.options import ENGINE_BUDGET
from tracer.stitch.model import PHASES

PHASE_LABELS = {"socket_queue": "socket queue", "wait": "wait", "exec": "exec", "reply_write": "reply write"}
PHASE_SHORT = {"socket_queue": "queue", "wait": "wait", "exec": "exec", "reply_write": "reply"}
BIG_KEY_MIN_BYTES = 1000  # smaller replies are not worth calling a key big
# the one wording of what cache-pattern detection misses when it sees only sampled/slow requests
SAMPLED_PATTERNS_NOTE = (f"cache patterns: this mode sees every request only below {ENGINE_BUDGET:,}/s per instance, "
                         "beyond that sampled and slow ones, so stampedes, penetration, avalanches and races can go "
                         "unseen; trace with --full to see every request")


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


def patterns_note(patterns_input: str) -> str | None:
    """The note a view prints under its cache patterns when the detectors did not see every request."""
    return None if patterns_input == "full" else SAMPLED_PATTERNS_NOTE


def pattern_line(p) -> str:
    """'stampede: 8 clients got nil for product:42 …': a pattern in one line (its first evidence)."""
    what = p.evidence[0] if p.evidence else ", ".join(str(k) for k in p.keys)
    return f"{p.kind}: {what}"
