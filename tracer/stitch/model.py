"""What the stitcher produces: one Request per command, Connections, AOF syncs, main-thread busy spans.

All timestamps are kernel CLOCK_MONOTONIC nanoseconds (0 = unknown); Clock converts for display.
"""
from __future__ import annotations

import time

from tracer.units import ns_to_us

# The phases of a request's latency, in time order (docs/ARCHITECTURE.md, "Timeline of one request");
# every view that splits latency uses these names.
PHASES = ("socket_queue", "wait", "exec", "reply_write")
# the reply_type of a request whose reply a lost record took (reported apart from "unanswered")
LOST_REPLY = "lost"

class Clock:
    """Monotonic ns -> wall-clock seconds, with the offset measured once."""

    __slots__ = ("offset_ns",)

    def __init__(self, offset_ns: int | None = None):
        if offset_ns is None:
            offset_ns = time.time_ns() - time.monotonic_ns()
        self.offset_ns = offset_ns

    def wall(self, mono_ns: int) -> float:
        return (mono_ns + self.offset_ns) / 1e9


# why a unix-socket request has no arrival time (docs/SECURITY.md "Unix sockets")
ARRIVAL_UNKNOWN_UNIX = ("unix socket: no tracepoint gives the time bytes reach an AF_UNIX socket "
                        "without reading kernel structs; latency starts at Redis's read")


def is_unix(client: str | None) -> bool:
    """A unix-socket client's name: "unix", or "unix:<pid>(<comm>)"."""
    return client is not None and client.startswith("unix")


class Request:
    """One command on one connection, from bytes arriving in the kernel to its reply fully written."""

    __slots__ = (
        "tgid", "conn_id", "fd", "client", "thread", "reply_thread", "command", "key", "argc",
        "request_bytes", "reply_bytes", "reply_type", "reply_error", "reply_detail",
        "arrival_ts", "wake_ts", "read_start_ts", "read_end_ts",
        "exec_start_ts", "exec_end_ts", "exec_source",
        "reply_start_ts", "reply_end_ts", "batch", "decode_ok",
    )

    def __init__(self):
        self.tgid = 0
        self.conn_id = 0            # unique per connection within a trace (fds are reused)
        self.fd = -1
        self.client = None          # "ip:port" or None when unknown
        self.thread = 0             # tid that read the request
        self.reply_thread = 0       # tid that wrote (the end of) the reply
        self.command = "?"          # upper-case; "?" when the bytes could not be decoded
        self.key = None
        self.argc = 0
        self.request_bytes = 0      # whole RESP frame on the wire
        self.reply_bytes = 0
        self.reply_type = "none"    # ok | error | moved | ask | nil | push | unknown | partial | none (no reply)
        #                             | lost (a record of its connection reached neither ring: reply unknown)
        self.reply_error = None     # error prefix such as "ERR", "MOVED", "WRONGTYPE"
        self.reply_detail = None    # MOVED/ASK: "slot host:port"
        self.arrival_ts = 0         # first byte in the kernel socket queue (sk_data_ready); 0 unknown
        self.wake_ts = 0            # main thread's epoll return before the read
        self.read_start_ts = 0
        self.read_end_ts = 0
        self.exec_start_ts = 0
        self.exec_end_ts = 0
        self.exec_source = "inferred"  # "uprobe" when call() was probed
        self.reply_start_ts = 0
        self.reply_end_ts = 0
        self.batch = 1              # commands decoded from the same read (pipelining)
        self.decode_ok = True

    # Phases, in ns; None when the timestamps needed are missing.
    @property
    def start_ts(self) -> int:
        return self.arrival_ts or self.read_start_ts

    @property
    def latency_ns(self) -> int | None:
        if not self.reply_end_ts or not self.start_ts:
            return None
        return max(0, self.reply_end_ts - self.start_ts)

    @property
    def socket_queue_ns(self) -> int | None:
        """Bytes waiting in the kernel until the main thread woke up to read them."""
        if not self.arrival_ts or not self.read_start_ts:
            return None
        woke = self.wake_ts if self.arrival_ts <= self.wake_ts <= self.read_start_ts else self.read_start_ts
        return max(0, woke - self.arrival_ts)

    @property
    def read_ns(self) -> int | None:
        if not self.read_start_ts or not self.read_end_ts:
            return None
        return max(0, self.read_end_ts - self.read_start_ts)

    @property
    def exec_ns(self) -> int | None:
        if not self.exec_start_ts or not self.exec_end_ts:
            return None
        return max(0, self.exec_end_ts - self.exec_start_ts)

    @property
    def wait_ns(self) -> int | None:
        """Time behind other work on the main thread: after waking before our read, and after
        our execution before our reply write started."""
        if not self.read_start_ts:
            return None
        total = 0
        if self.arrival_ts and self.wake_ts and self.arrival_ts <= self.wake_ts <= self.read_start_ts:
            total += self.read_start_ts - self.wake_ts
        if self.exec_start_ts and self.read_end_ts and self.exec_start_ts > self.read_end_ts:
            total += self.exec_start_ts - self.read_end_ts
        if self.reply_start_ts and self.exec_end_ts and self.reply_start_ts > self.exec_end_ts:
            total += self.reply_start_ts - self.exec_end_ts
        return total

    @property
    def reply_write_ns(self) -> int | None:
        if not self.reply_start_ts or not self.reply_end_ts:
            return None
        return max(0, self.reply_end_ts - self.reply_start_ts)

    def phases_us(self) -> dict:
        def us(v):
            return None if v is None else ns_to_us(v)

        return {"socket_queue": us(self.socket_queue_ns), "read": us(self.read_ns), "wait": us(self.wait_ns),
                "exec": us(self.exec_ns), "reply_write": us(self.reply_write_ns)}

    def to_json(self, clock: Clock) -> dict:
        latency = self.latency_ns
        return {
            "ts": round(clock.wall(self.start_ts), 6) if self.start_ts else None,
            "pid": self.tgid, "client": self.client, "thread": self.thread, "fd": self.fd,
            "command": self.command, "key": self.key, "argc": self.argc,
            "request_bytes": self.request_bytes, "reply_bytes": self.reply_bytes,
            "reply_type": self.reply_type, "reply_error": self.reply_error, "redirect": self.reply_detail,
            "latency_us": None if latency is None else round(latency / 1000.0, 3),
            "phases_us": self.phases_us(), "exec_source": self.exec_source,
            "arrival_known": bool(self.arrival_ts), "batch": self.batch,
            **({"arrival_unknown": ARRIVAL_UNKNOWN_UNIX} if not self.arrival_ts and is_unix(self.client) else {}),
        }


class Connection:
    __slots__ = ("tgid", "conn_id", "fd", "client", "accept_ts", "established_ts", "close_ts",
                 "closed_by", "requests", "kind")

    def __init__(self, tgid: int, conn_id: int, fd: int, client: str | None):
        self.tgid = tgid
        self.conn_id = conn_id
        self.fd = fd
        self.client = client
        self.accept_ts = 0
        self.established_ts = 0     # handshake done: the accept-queue wait starts
        self.close_ts = 0
        self.closed_by = None       # "client" (read returned 0) | "server" | "exit" | None
        self.requests = 0
        self.kind = "client"        # client | replica | cluster-bus | monitor | pubsub

    @property
    def accept_queue_ns(self) -> int | None:
        if not self.established_ts or not self.accept_ts or self.accept_ts < self.established_ts:
            return None
        return self.accept_ts - self.established_ts


class FileSync:
    """One fsync/fdatasync, or one write to the AOF file."""

    __slots__ = ("tgid", "tid", "fd", "op", "start_ts", "end_ts", "nbytes", "main_thread")

    def __init__(self, tgid, tid, fd, op, start_ts, end_ts, nbytes=0):
        self.tgid = tgid
        self.tid = tid
        self.fd = fd
        self.op = op                # "fsync" | "fdatasync" | "aof-write"
        self.start_ts = start_ts
        self.end_ts = end_ts
        self.nbytes = nbytes
        self.main_thread = tid == tgid

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ts - self.start_ts)


class BusySpan:
    """The main thread between an epoll return and the next epoll entry (only spans >= LOOP_MIN_NS)."""

    __slots__ = ("tgid", "start_ts", "end_ts", "faults")

    def __init__(self, tgid, start_ts, end_ts, faults=0):
        self.tgid = tgid
        self.start_ts = start_ts
        self.end_ts = end_ts
        self.faults = faults        # the main thread's user page faults in it (with the sched probes)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ts - self.start_ts)


class LossSpan:
    """Records of one connection (or file) that reached neither ring buffer: which, and when."""

    __slots__ = ("tgid", "fd", "conn_id", "client", "first_ts", "last_ts", "records", "requests")

    def __init__(self, tgid, fd, conn_id, client, first_ts, last_ts, records, requests=0):
        self.tgid = tgid
        self.fd = fd
        self.conn_id = conn_id      # 0: no connection known for the fd
        self.client = client
        self.first_ts = first_ts    # end times of the first and last lost record
        self.last_ts = last_ts
        self.records = records
        self.requests = requests    # requests it left without a known reply (reported as "lost")

    def as_dict(self, first_ts: int) -> dict:
        def rel(ts):
            return round(max(0, ts - first_ts) / 1e9, 6) if first_ts and ts else None

        return {"pid": self.tgid, "fd": self.fd, "conn_id": self.conn_id, "client": self.client,
                "start_s": rel(self.first_ts), "end_s": rel(self.last_ts), "records": self.records,
                "requests": self.requests}


class Invalidation:
    """A CLIENT TRACKING invalidation push a client received: the keys another write invalidated."""

    __slots__ = ("tgid", "client", "keys", "ts")

    def __init__(self, tgid: int, client: str, keys: list, ts: int):
        self.tgid = tgid
        self.client = client        # the tracking client (its redirect connection in RESP2)
        self.keys = keys
        self.ts = ts


class Propagated:
    """A key deletion the master sent its replicas (DEL/UNLINK in the replication stream): how Redis
    propagates a key it expired or evicted, so the one place where such a key's name can be seen."""

    __slots__ = ("tgid", "ts", "command", "key")

    def __init__(self, tgid: int, ts: int, command: str, key):
        self.tgid = tgid
        self.ts = ts                # the write that sent it
        self.command = command
        self.key = key
