"""Structured logs: one JSON line per stall, for log pipelines (stdout of the agent)."""
from __future__ import annotations

import json
from datetime import datetime, timezone


def stall_line(instance: str, pid: int, verdict, wall_s: float) -> str:
    """A finished StallVerdict as one JSON object. wall_s: the stall's start, seconds since the epoch."""
    culprit = {"command": verdict.command or None, "key": verdict.key, "client": verdict.client or None}
    return json.dumps({
        "time": datetime.fromtimestamp(wall_s, timezone.utc).isoformat(timespec="milliseconds"),
        "event": "stall", "instance": instance, "pid": pid, "class": verdict.class_,
        "duration_ms": round(verdict.duration_ms, 3), "culprit": culprit, "victims": verdict.victims,
        "victim_added_ms": verdict.victim_added_ms, "evidence": list(verdict.evidence),
        "advice": list(verdict.advice),
    }, default=str, separators=(",", ":"))
