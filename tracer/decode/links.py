"""Connections that are not clients, recognised from their traffic (never from the port alone):

- cluster bus: every message starts with the signature "RCmb" (clusterMsg in cluster.h); gossip is
  counted per message type and peer node, and never reported as requests;
- replica link on a master: after the replica's PSYNC/SYNC, what the master writes is the
  replication stream (bytes and write latency); the replica's REPLCONF ACKs are not requests;
- master link on a replica: an outgoing connection of Redis's own; what it reads is the stream of
  commands the replica applies, which are not client requests.
"""
from __future__ import annotations

import re
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

    __slots__ = ("skip", "head", "lost", "heads")

    def __init__(self):
        self.skip = 0          # bytes of the current message still to come
        self.head = b""        # a message header cut by the end of a read
        self.lost = False      # a header fell outside the capture: stream can no longer be split
        self.heads: list[tuple[int, int]] = []  # the last read's header bytes (offset, length): kept in a recording

    def feed(self, data: bytes, total: int) -> list[tuple[str, str | None, int]]:
        out = []
        pos = 0
        base = 0        # where data[0] lies in this read (below 0: a header carried from the last one)
        self.heads = heads = []
        if self.lost:
            return out
        if self.skip:
            step = min(self.skip, total)
            self.skip -= step
            pos = step
        if self.head:
            base = pos - len(self.head)
            data = self.head + data[pos:]
            total = len(self.head) + total - pos
            pos = 0
            self.head = b""
        while pos < total:
            if pos + _BUS_MIN > len(data):
                if len(data) >= total:  # the header continues in the next read
                    self.head = data[pos:total]
                    heads.append((base + pos, total - pos))
                else:
                    self.lost = True
                break
            sig, totlen, _ver, _port, mtype = _BUS_HEAD.unpack_from(data, pos)
            if sig != CLUSTER_SIG or not _BUS_MIN <= totlen <= MAX_BUS_MSG:
                self.lost = True
                break
            heads.append((base + pos, _BUS_MIN))
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


# -- what a recording may keep of a link's bytes ---------------------------------------------------
# Link traffic holds values and secrets like a client's: the replication stream and the RDB of a full
# resync carry every value, a replica's handshake carries masterauth (AUTH), MIGRATE's connection
# carries AUTH and the dumped values (RESTORE), the cluster bus carries PUBLISH messages. A recording
# keeps only what a replay needs to classify and account the link the same way (command names and
# keys, the replies that tell a master link, the cluster bus message headers); the rest is masked.

RDB_EOF_MARK = 40   # diskless full resync: "$EOF:<40 random bytes>\r\n" ... RDB ... <the same 40 bytes>


class SyncTransfer:
    """The part of what a master writes to a replica before the command stream: "+FULLRESYNC" or
    "+CONTINUE" lines, "\\n" keep-alives, and the RDB of a full resync ("$<len>\\r\\n" then len bytes,
    or "$EOF:<mark>\\r\\n" then bytes up to the mark). The RDB holds every value: masked whole (the
    diskless end mark kept, so a replay finds the end the same way)."""

    __slots__ = ("left", "mark", "done")

    def __init__(self):
        self.left = 0           # RDB bytes still to come (length-prefixed transfer)
        self.mark = None        # end mark of a diskless transfer still to come
        self.done = False       # the command stream began: nothing of this kind comes again

    def replica_spoke(self) -> None:
        """The replica wrote to the master (its REPLCONF ACK): it has loaded the RDB, so the transfer is
        over even when its end mark lay past a capture (a diskless RDB is written in 16 KiB chunks)."""
        if self.left or self.mark is not None:
            self.left, self.mark = 0, None

    def feed(self, data: bytes, total: int) -> tuple[int, list[tuple[int, int]]]:
        """(bytes of this write that belong to the transfer, spans of RDB bytes to mask)."""
        pos, spans = 0, []
        while pos < total and not self.done:
            if self.left:
                step = min(self.left, total - pos)
                spans.append((pos, step))
                self.left -= step
                pos += step
            elif self.mark is not None:
                end = data.find(self.mark, pos)
                if end < 0:     # the mark is in a later write (or past the capture: masked until found)
                    spans.append((pos, total - pos))
                    return total, spans
                spans.append((pos, end - pos))
                pos = end + len(self.mark)
                self.mark = None
            elif data[pos:pos + 1] == b"\n":
                pos += 1
            elif data[pos:pos + 1] in (b"+", b"$"):
                nl = data.find(b"\r\n", pos, pos + 128)
                if nl < 0:
                    self.done = True    # not a transfer line: let the stream parser judge
                    break
                line = data[pos:nl]
                if line.startswith(b"$EOF:") and len(line) == 5 + RDB_EOF_MARK:
                    self.mark = line[5:]
                elif line[:1] == b"$":
                    if not line[1:].isdigit():
                        self.done = True
                        break
                    self.left = int(line[1:])
                pos = nl + 2
            else:
                self.done = True
        return pos, spans


_MASTER_REPLY_WORD = re.compile(rb"\+[A-Z]+")


def reply_head_spans(payload: bytes) -> list[tuple[int, int]]:
    """What Redis reads on a link it opened (a master's replies and stream, a MIGRATE target's
    replies): all masked but a leading "+WORD", which tells a master link (+FULLRESYNC, +PONG...)."""
    m = _MASTER_REPLY_WORD.match(payload)
    keep = m.end() if m else 0
    return [(keep, len(payload) - keep)] if len(payload) > keep else []


def unkept_spans(kept, n: int) -> list[tuple[int, int]]:
    """The spans of [0, n) outside the sorted, non-overlapping `kept` spans (clipped to [0, n))."""
    spans, pos = [], 0
    for off, length in kept:
        start, end = max(off, 0), min(off + length, n)
        if start > pos:
            spans.append((pos, start - pos))
        pos = max(pos, end)
    if pos < n:
        spans.append((pos, n - pos))
    return spans


def bus_write_spans(payload: bytes) -> list[tuple[int, int]]:
    """A cluster bus write: the first message's header kept (what tells a bus link), the rest masked
    (gossip and PUBLISH payloads; a node's own writes are not counted, so nothing else is needed)."""
    keep = _BUS_MIN if looks_like_cluster_bus(payload) else 0
    return [(keep, len(payload) - keep)] if len(payload) > keep else []
