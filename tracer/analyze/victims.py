"""Who a stall delayed, and by how much.

Victims are requests of other connections whose bytes arrived during the span (they could only be
read after it: added = min(end, reply start) - max(start, arrival)), plus in-span requests of other
connections that waited on a culprit's execution in the same loop iteration (added = culprit
execution between their wake-up and their reply).
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field


class Intervals:
    """Union of intervals, for 'how much of [a, b) is covered' in O(log n)."""

    __slots__ = ("starts", "ends", "prefix")

    def __init__(self, intervals):
        merged: list[list[int]] = []
        for a, b in sorted(intervals):
            if b <= a:
                continue
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.starts = [a for a, _ in merged]
        self.ends = [b for _, b in merged]
        self.prefix = [0]
        for a, b in merged:
            self.prefix.append(self.prefix[-1] + b - a)

    def covered(self, a: int, b: int) -> int:
        if b <= a or not self.starts:
            return 0
        i = bisect_right(self.ends, a)     # first interval ending after a
        j = bisect_left(self.starts, b)    # intervals [0, j) start before b
        if i >= j:
            return 0
        total = self.prefix[j] - self.prefix[i]
        if self.starts[i] < a:
            total -= a - self.starts[i]
        if self.ends[j - 1] > b:
            total -= self.ends[j - 1] - b
        return max(0, total)


@dataclass(slots=True)
class Victims:
    count: int = 0
    added_total_ns: int = 0
    added_max_ns: int = 0
    conns: set = field(default_factory=set)

    def add(self, conn, n: int, total_ns: int, max_ns: int) -> None:
        self.count += n
        self.added_total_ns += total_ns
        self.added_max_ns = max(self.added_max_ns, max_ns)
        self.conns.add(conn)

    @property
    def added_mean_ns(self) -> float:
        return self.added_total_ns / self.count if self.count else 0.0


def find_victims(start: int, end: int, arrivals: dict, units: list, culprit_conns: set,
                 culprit_units: list) -> Victims:
    """arrivals: conn_id -> [n, added total ns, added max ns] of bytes that arrived in the span."""
    culprit_exec = Intervals([(max(m.exec_start_ts, start), min(m.exec_end_ts, end))
                              for u in culprit_units for m in u.members if m.exec_start_ts and m.exec_end_ts])
    found = Victims()
    for conn, (n, total, most) in arrivals.items():
        if conn not in culprit_conns:
            found.add(conn, n, total, most)
    for u in units:
        if u.conn in culprit_conns:
            continue
        for r in u.members:
            ready = max(start, r.arrival_ts) if r.arrival_ts else max(start, r.wake_ts or r.read_start_ts or start)
            done = min(end, r.reply_start_ts or r.reply_end_ts or end)
            added = culprit_exec.covered(ready, done)
            if added > 0:
                found.add(r.conn_id, 1, added, added)
    return found
