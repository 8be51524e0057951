"""Connections that are not clients, recognised from their traffic (never from the port alone):

- cluster bus: every message starts with the signature "RCmb" (clusterMsg in cluster.h); gossip is
  counted per message type and peer node, and never reported as requests;
- replica link on a master: after the replica's PSYNC/SYNC, what the master writes is the
  replication stream (bytes and write latency); the replica's REPLCONF ACKs are not requests;
- master link on a replica: an outgoing connection of Redis's own; what it reads is the stream of
  commands the replica applies, which are not client requests.
"""
from __future__ import annotations

import struct

CLUSTER_SIG = b"RCmb"
CLUSTER_TYPES = {0: "PING", 1: "PONG", 2: "MEET", 3: "FAIL", 4: "PUBLISH", 5: "FAILOVER_AUTH_REQUEST",
                 6: "FAILOVER_AUTH_ACK", 7: "UPDATE", 8: "MFSTART", 9: "MODULE", 10: "PUBLISHSHARD"}
_BUS_HEAD = struct.Struct(">4sIHHH")  # sig, totlen, ver, port, type (network byte order)
_SENDER_OFF = 4 + 4 + 2 + 2 + 2 + 2 + 8 + 8 + 8  # sender[40] follows the epochs and offset
_BUS_MIN = _SENDER_OFF + 40
MAX_BUS_MSG = 64 * 1024 * 1024


class LinkStats:
    """What one non-client connection carried."""

    __slots__ = ("tgid", "kind", "peer", "bytes_in", "bytes_out", "writes", "write_ns", "write_max_ns",
                 "messages", "senders", "undecodable")

    def __init__(self, tgid: int, kind: str, peer: str | None):
        self.tgid = tgid
        self.kind = kind            # "cluster-bus" | "replica" | "master-link"
        self.peer = peer
        self.bytes_in = 0
        self.bytes_out = 0
        self.writes = 0
        self.write_ns = 0
        self.write_max_ns = 0
        self.messages: dict[str, int] = {}  # cluster bus: message type -> count
        self.senders: set = set()           # cluster bus: node names seen
        self.undecodable = 0

    def as_dict(self) -> dict:
        return {"kind": self.kind, "peer": self.peer, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "writes": self.writes, "write_us_total": round(self.write_ns / 1000, 3),
                "write_max_us": round(self.write_max_ns / 1000, 3),
                "messages": dict(sorted(self.messages.items())), "nodes": sorted(self.senders)}


class BusParser:
    """Splits a cluster bus byte stream into messages (type, sender) using their own lengths, so
    bytes that were not captured are skipped exactly."""

    __slots__ = ("skip", "head", "lost")

    def __init__(self):
        self.skip = 0          # bytes of the current message still to come
        self.head = b""        # a message header cut by the end of a read
        self.lost = False      # a header fell outside the capture: stream can no longer be split

    def feed(self, data: bytes, total: int) -> list[tuple[str, str | None, int]]:
        out = []
        pos = 0
        if self.lost:
            return out
        if self.skip:
            step = min(self.skip, total)
            self.skip -= step
            pos = step
        if self.head:
            data = self.head + data[pos:]
            total = len(self.head) + total - pos
            pos = 0
            self.head = b""
        while pos < total:
            if pos + _BUS_MIN > len(data):
                if len(data) >= total:  # the header continues in the next read
                    self.head = data[pos:total]
                else:
                    self.lost = True
                break
            sig, totlen, _ver, _port, mtype = _BUS_HEAD.unpack_from(data, pos)
            if sig != CLUSTER_SIG or not _BUS_MIN <= totlen <= MAX_BUS_MSG:
                self.lost = True
                break
            sender = data[pos + _SENDER_OFF: pos + _SENDER_OFF + 40].split(b"\0", 1)[0]
            out.append((CLUSTER_TYPES.get(mtype, f"TYPE{mtype}"), sender.decode("ascii", "replace") or None,
                        totlen))
            if pos + totlen > total:
                self.skip = pos + totlen - total
                break
            pos += totlen
        return out


def looks_like_cluster_bus(payload: bytes) -> bool:
    return payload[:4] == CLUSTER_SIG
