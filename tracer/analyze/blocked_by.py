"""Which stall delayed a request: the victim's pointer to its culprit (`blocked_by`).

A request is blocked by the stall of its instance that covers most of its latency, when that stall
covers at least BLOCKED_SHARE of it. Used by the slowest-requests panel, `trace --json` and the
Chrome export's flow arrows. Only requests at least BLOCKED_MIN_NS slow are looked up (a stall is
>= --stall-ms, so a faster request cannot have waited on one for most of its time).
"""
from __future__ import annotations

import time
from collections import deque

from tracer.analyze.diagnosis import StallDetector
from tracer.analyze.offcpu import CPU_STARVED

BLOCKED_SHARE = 0.5
BLOCKED_MIN_NS = 1_000_000
HOLD_S = 1.0            # trace --json: how long a possible victim waits for its stall to be known
MAX_HELD = 10_000       # ... and how many may wait


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
    if best_ns < BLOCKED_SHARE * (end - start):
        return None
    # A request executing through most of the stall made it, unless the main thread spent the stall
    # waiting for a CPU: a GET read just before another process took the CPU is that stall's victim.
    if exec_ns >= BLOCKED_SHARE * best_ns and best.class_ != CPU_STARVED:
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
        return self.blocking(req)

    def blocking(self, req) -> dict | None:
        """Which stall known now delayed the request (it was offered before)."""
        if not may_be_victim(req) or not self.detector.stalls_total:
            return None
        return blocked_by(req, detector_verdicts(self.detector))


def may_be_victim(req) -> bool:
    latency = req.latency_ns
    return latency is not None and latency >= BLOCKED_MIN_NS


class VictimHold:
    """`trace --json` prints each request as it comes, but a stall is often known only at its end:
    the busy span's LOOP record comes after the replies written in it (a main thread preempted while
    busy, not woken in epoll_wait, is a stall only then). A request slow enough to be a victim and
    not yet blocked by a known stall waits up to hold_s for one (at most max_held of them: the
    oldest goes first), so its blocked_by is not left out by the order the records came in."""

    def __init__(self, tracker: StallTracker, hold_s: float = HOLD_S, max_held: int = MAX_HELD,
                 now=time.monotonic):
        self.tracker = tracker
        self.hold_s = hold_s
        self.max_held = max_held
        self.now = now
        self.waiting: deque = deque()       # (deadline, Request)

    def take(self, req) -> tuple[bool, dict | None]:
        """(ready now, its blocked_by); not ready: release() gives it later."""
        blocked = self.tracker.of(req)
        if blocked is None and may_be_victim(req):
            self.waiting.append((self.now() + self.hold_s, req))
            return False, None
        return True, blocked

    def release(self, final: bool = False) -> list:
        """[(Request, blocked_by)] of the waiting requests whose stall is known now, whose time is up,
        beyond max_held, or all of them (final), in the order they came."""
        out, keep = [], deque()
        now = self.now()
        over = len(self.waiting) - self.max_held
        for deadline, req in self.waiting:
            blocked = self.tracker.blocking(req)
            if blocked is not None or final or now >= deadline or over > 0:
                out.append((req, blocked))
                over -= 1
            else:
                keep.append((deadline, req))
        self.waiting = keep
        return out
