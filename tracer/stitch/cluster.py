"""Redis Cluster along the request path: MOVED/ASK redirects, and following a redirected client to
the node it was sent to."""
from __future__ import annotations

from collections import OrderedDict

JOIN_WINDOW_NS = 5_000_000_000  # a follow-up later than this is not the same logical request
MAX_OPEN = 10_000


class RedirectTracker:
    """Counts redirects per node and slot, and joins a redirected request with its retry on the
    node named in the redirect when that node is traced and the client's address matches (same
    client IP, same command and key: a cluster client opens one connection per node, so only the
    IP can match)."""

    def __init__(self, port_to_tgid: dict[int, int] | None = None):
        self.port_to_tgid = port_to_tgid or {}
        self.moved = 0
        self.ask = 0
        self.by_node_slot: dict[tuple[int, int], list] = {}  # (tgid, slot) -> [moved, ask]
        self.cost_ns = 0        # server-side latency of the redirected attempts: the wasted round trip
        self.joined = 0
        self.joined_total_ns = 0
        self.unjoined = 0
        self.unjoined_reasons: dict[str, int] = {}
        self._open: OrderedDict = OrderedDict()  # (ip, command, key, target tgid) -> (start_ts, end_ts)

    def on_request(self, req) -> None:
        kind = req.reply_type
        if kind == "moved" or kind == "ask":
            self._redirect(req, kind)
        elif self._open and req.client:
            key = (req.client.rsplit(":", 1)[0], req.command, req.key, req.tgid)
            hit = self._open.pop(key, None)
            if hit is not None:
                start, end = hit
                if req.start_ts >= end and req.start_ts - end <= JOIN_WINDOW_NS and req.reply_end_ts:
                    self.joined += 1
                    self.joined_total_ns += req.reply_end_ts - start
                else:
                    self._not_joined("retry too late")

    def _redirect(self, req, kind: str) -> None:
        if kind == "moved":
            self.moved += 1
        else:
            self.ask += 1
        slot, target = None, None
        if req.reply_detail:
            parts = req.reply_detail.split()
            if parts and parts[0].isdigit():
                slot = int(parts[0])
            if len(parts) > 1:
                target = parts[1]
        counts = self.by_node_slot.setdefault((req.tgid, slot if slot is not None else -1), [0, 0])
        counts[0 if kind == "moved" else 1] += 1
        if req.latency_ns:
            self.cost_ns += req.latency_ns
        if not req.client or target is None:
            self._not_joined("client address unknown" if not req.client else "no target in the redirect")
            return
        port = int(target.rsplit(":", 1)[1]) if target.rsplit(":", 1)[-1].isdigit() else None
        tgid = self.port_to_tgid.get(port)
        if tgid is None:
            self._not_joined("target node not traced")
            return
        self._open[(req.client.rsplit(":", 1)[0], req.command, req.key, tgid)] = (req.start_ts, req.reply_end_ts)
        if len(self._open) > MAX_OPEN:
            self._open.popitem(last=False)
            self._not_joined("too many open redirects")

    def _not_joined(self, why: str) -> None:
        self.unjoined += 1
        self.unjoined_reasons[why] = self.unjoined_reasons.get(why, 0) + 1

    def finish(self) -> None:
        for _ in range(len(self._open)):
            self._not_joined("no retry seen on the target node")
        self._open.clear()

    def as_dict(self, tgid_port: dict[int, int | None]) -> dict:
        nodes = [{"pid": tgid, "port": tgid_port.get(tgid), "slot": slot if slot >= 0 else None,
                  "moved": c[0], "ask": c[1]} for (tgid, slot), c in sorted(self.by_node_slot.items())]
        return {"moved": self.moved, "ask": self.ask, "by_node_slot": nodes,
                "redirected_latency_us_total": round(self.cost_ns / 1000, 3),
                "joined": self.joined,
                "joined_latency_us_mean": round(self.joined_total_ns / self.joined / 1000, 3) if self.joined else None,
                "not_joined": self.unjoined, "not_joined_reasons": dict(sorted(self.unjoined_reasons.items()))}
