"""Which stall delayed a request: the victim's pointer to its culprit (`blocked_by`).

A request is blocked by the stall of its instance that covers most of its latency, when that stall
covers at least BLOCKED_SHARE of it. Used by the slowest-requests panel, `trace --json` and the
Chrome export's flow arrows. Only requests at least BLOCKED_MIN_NS slow are looked up (a stall is
>= --stall-ms, so a faster request cannot have waited on one for most of its time).
"""
from __future__ import annotations

from tracer.analyze.diagnosis import StallDetector

BLOCKED_SHARE = 0.5
BLOCKED_MIN_NS = 1_000_000


def _overlap(a: int, b: int, c: int, d: int) -> int:
    return max(0, min(b, d) - max(a, c))


def blocking_verdict(tgid: int, start: int, end: int, verdicts, exec_ns: int = 0):
    """The StallVerdict (of `verdicts`) that delayed a request of tgid from start to end, or None. A
    request whose own execution (exec_ns) is most of that overlap made the stall: it is no victim."""
    if not start or not end or end - start < BLOCKED_MIN_NS:
        return None
    best, best_ns = None, 0
    for v in verdicts:
        if v.tgid != tgid:
            continue
        ns = _overlap(start, end, v.start_ts, v.end_ts)
        if ns > best_ns:
            best, best_ns = v, ns
    if best_ns < BLOCKED_SHARE * (end - start) or exec_ns >= BLOCKED_SHARE * best_ns:
        return None
    return best


def blocked_by_json(v) -> dict | None:
    """{id, culprit, class} of a StallVerdict (None: not blocked)."""
    if v is None:
        return None
    culprit = v.cause or (f"{v.command} {v.key}" if v.key else v.command) or "?"
    return {"id": v.seq, "culprit": culprit, "class": v.class_}


def detector_verdicts(detector) -> list:
    """The stalls a detector knows now, finished and open (its `latest` window and the longest kept)."""
    return [v for v, _ in detector.latest(64)] + list(detector.done)


def blocked_by(req, verdicts) -> dict | None:
    """A stitched Request's blocked_by among verdicts."""
    return blocked_by_json(blocking_verdict(req.tgid, req.start_ts, req.reply_end_ts, verdicts, req.exec_ns or 0))


class StallTracker:
    """Stalls found on the fly for a stream of requests that has no Analyzer (`trace`): feed it the
    stitcher's busy spans, syncs and sched items, offer each request, then ask `of(req)`."""

    def __init__(self, stall_ms: float):
        self.detector = StallDetector(stall_ms, max_stalls=64)
        self.on_busy = self.detector.on_busy
        self.on_sync = self.detector.on_sync
        self.on_sched = self.detector.on_sched
        self.offer = True

    def follow(self, detector) -> None:
        """Use a detector that is fed already (the engine pipeline's): requests are not offered again."""
        self.detector = detector
        self.offer = False

    def of(self, req) -> dict | None:
        """Offer the request (a culprit or victim of stalls to come) and say which stall delayed it."""
        if self.offer:
            self.detector.on_request(req)
        latency = req.latency_ns
        if latency is None or latency < BLOCKED_MIN_NS or not self.detector.stalls_total:
            return None
        return blocked_by(req, detector_verdicts(self.detector))
