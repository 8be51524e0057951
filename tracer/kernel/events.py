"""The probe record layout (mirror of probes/events.h) and its decoding.

A record is a fixed 80-byte header followed by `cap_len` payload bytes. Records
travel as raw bytes from the ring buffer to the trace file and back; they are
decoded into an Event only where they are consumed.
"""
from __future__ import annotations

import ipaddress
import struct

from tracer import native

# Bytes 40..60 of every record, whatever its struct: drain() reads tgid, fd, kind and flags there.
PEEKED = (
    ("I", "tgid"),
    ("I", "tid"),
    ("i", "fd"),
    ("H", "kind"),
    ("H", "flags"),
    ("I", "cap_len"),
)
# Field order, C type and name exactly as in struct rt_event; tests compare with the header.
FIELDS = (
    ("Q", "ts_enter"),
    ("Q", "ts_exit"),
    ("Q", "aux_ts"),
    ("Q", "aux_ts2"),
    ("q", "ret"),
    *PEEKED,
    ("H", "peer_port"),
    ("H", "family"),
    ("16s", "peer_addr"),
)
HEADER = struct.Struct("<" + "".join(code for code, _ in FIELDS))
HEADER_SIZE = HEADER.size  # 80
# Byte offset of each header field: the only place outside this module that needs one reads a
# field through the accessors below (field_reader), never with a literal offset.
OFFSETS = {}
_at = 0
for _code, _name in FIELDS:
    OFFSETS[_name] = _at
    _at += struct.calcsize("<" + _code)
del _at, _code, _name

# enum rt_kind
ACCEPT, READ, WRITE, CLOSE, FSYNC, LOOP, EXEC, REQ = 1, 2, 3, 4, 5, 6, 7, 8
OFFCPU, RUNQ, FORK = 9, 10, 11     # probes/sched.c (--why): tid 0, the tgid's main thread (events.h)
SAMPLE = 12     # sample.c: a main-thread stack snapshot in a long busy span (never recorded: see kernel/stacks.py)
# Made in user space, recorded like the rest so that replay sees exactly what live mode saw:
FDINFO = 100    # an fd classified after the fact (ret = fd kind, payload = path or peer)
COUNTERS = 101  # kernel counters read on a tick (ret = lost records, aux_ts = busy ns, aux_ts2 = idle ns)
EXIT = 102      # a traced process (tgid) is gone: the kernel closed its fds without a close() to trace
LOST = 103      # records of one fd neither ring took: ret = how many, ts_enter..ts_exit = their end times
ENGINE = 104    # the engine's aggregates of one instance (tgid), cumulative: payload = zlib JSON (tracer/engine)
INFO = 105      # fields of the target's INFO, sampled (payload = "name:value" lines, kernel/info.py)
REDIS = 106     # Redis's own LATENCY LATEST and SLOWLOG at the end of a run (payload = JSON, decode/redis_log.py)
STACKS = 109    # what a stall's main thread ran: folded stacks of its samples (payload, kernel/stacks.py);
                # ts_enter..ts_exit = the busy span, ret = samples taken
KIND_NAMES = {ACCEPT: "accept", READ: "read", WRITE: "write", CLOSE: "close", FSYNC: "fsync",
              LOOP: "loop", EXEC: "exec", REQ: "req", FDINFO: "fdinfo", COUNTERS: "counters", EXIT: "exit",
              LOST: "lost", ENGINE: "engine", INFO: "info", OFFCPU: "offcpu", RUNQ: "runq", FORK: "fork",
              REDIS: "redis", SAMPLE: "sample", STACKS: "stacks"}

# enum rt_fd_kind
FD_UNKNOWN, FD_CLIENT, FD_AOF, FD_IGNORE, FD_FILE = 0, 1, 2, 3, 4

# enum rt_flags
RTF_WRITEV, RTF_FDATASYNC, RTF_UNKNOWN_FD, RTF_ACCEPT4, RTF_EPOLL_PWAIT, RTF_FILE_FD = 1, 2, 4, 8, 16, 32
RTF_ENGINE_RAW = 64
RTF_ENGINE_AT_CMD = 128     # ... and they start at a command's first byte
# enum rt_sched_flags
SCF_IN_EPOLL, SCF_STACK, SCF_ANNOTATE = 1, 2, 128

# struct rt_req: the engine's per-request record (a REQ record; decoded by tracer/engine/records.py)
REQ_FIELDS = (
    ("Q", "read_start"),
    ("Q", "write_end"),
    ("Q", "arrival_ts"),
    ("Q", "wake_ts"),
    ("Q", "read_end"),
    *PEEKED,
    ("H", "cmd_id"),
    ("H", "ncmds"),
    ("Q", "write_start"),
    ("I", "bytes_in"),
    ("I", "bytes_out"),
    ("I", "argc"),
    ("B", "reply_type"),
    ("B", "slot"),
    ("H", "busy_ms"),
)
REQ_HEADER = struct.Struct("<" + "".join(code for code, _ in REQ_FIELDS))
REQ_HEADER_SIZE = REQ_HEADER.size  # 88

# enum rt_req_flags
RQF_SLOW, RQF_SAMPLED, RQF_STALL, RQF_VICTIM, RQF_OVERFLOW, RQF_REDIRECT = 1, 2, 8, 16, 32, 128
RQ_CAP_ROOM, RQ_REDIRECT_LEN = 64, 48   # a redirect's reply head: at RQ_CAP_ROOM after the REQ header
# enum rt_reply
RPL_NONE, RPL_OK, RPL_ERROR, RPL_NIL, RPL_MOVED, RPL_ASK = 0, 1, 2, 3, 4, 5

# enum rt_counter
CNT_LOST, CNT_LOOP_BUSY_NS, CNT_LOOP_IDLE_NS, CNT_LOOPS = 0, 1, 2, 3
CNT_REFUSED_FULL, CNT_REFUSED_ROOM, CNT_RESCUED, CNT_REFUSED_AVAIL_MAX, CNT_REFUSED_NS_MAX = 4, 5, 6, 7, 8
CNT_REFUSED_CONS_POS, CNT_REFUSED_PROD_POS, CNT_MAX = 9, 10, 11

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10


class Event:
    """One decoded record. Plain attributes: built once per record in the hot loop."""

    __slots__ = tuple(name for _, name in FIELDS) + ("payload",)

    def __init__(self, ts_enter=0, ts_exit=0, aux_ts=0, aux_ts2=0, ret=0, tgid=0, tid=0, fd=-1,
                 kind=0, flags=0, cap_len=0, peer_port=0, family=0, peer_addr=b"\0" * 16, payload=b""):
        self.ts_enter = ts_enter
        self.ts_exit = ts_exit
        self.aux_ts = aux_ts
        self.aux_ts2 = aux_ts2
        self.ret = ret
        self.tgid = tgid
        self.tid = tid
        self.fd = fd
        self.kind = kind
        self.flags = flags
        self.cap_len = cap_len
        self.peer_port = peer_port
        self.family = family
        self.peer_addr = peer_addr
        self.payload = payload

    @property
    def peer(self) -> str | None:
        return format_peer(self.family, self.peer_addr, self.peer_port)

    def __repr__(self) -> str:
        kind = KIND_NAMES.get(self.kind, self.kind)
        return (f"Event({kind} tid={self.tid} fd={self.fd} ret={self.ret} "
                f"t={self.ts_enter}..{self.ts_exit} cap={self.cap_len})")


_unpack_header = HEADER.unpack_from
_new_event = object.__new__


def decode(record: bytes | memoryview) -> Event:
    """Decode one raw record; raises ValueError when it is shorter than it says."""
    # hot path (once per record): one unpack into the slots, no __init__ call
    try:
        fields = _unpack_header(record)
    except struct.error:
        raise ValueError(f"record of {len(record)} bytes is shorter than the {HEADER_SIZE}-byte header") from None
    ev = _new_event(Event)
    (ev.ts_enter, ev.ts_exit, ev.aux_ts, ev.aux_ts2, ev.ret, ev.tgid, ev.tid, ev.fd, ev.kind, ev.flags,
     cap, ev.peer_port, ev.family, ev.peer_addr) = fields
    ev.cap_len = cap
    if cap:
        end = HEADER_SIZE + cap
        payload = record[HEADER_SIZE:end]
        if len(payload) < cap:
            raise ValueError(f"record says {cap} payload bytes but holds {len(record) - HEADER_SIZE}")
        ev.payload = payload if payload.__class__ is bytes else bytes(payload)
    else:
        ev.payload = b""
    return ev


decode_py = decode  # the reference: tests compare the compiled decode with it


def _configure_native(mod) -> None:
    mod.configure(Event, FIELDS)


_native = native.load("tracer.kernel._events_native", _configure_native)
decode = decode_py if _native is None else _native.decode


def field_reader(name: str):
    """A fast reader of one integer header field of a raw record: read(raw) -> int (no full decode)."""
    code = dict((n, c) for c, n in FIELDS)[name]
    unpack = struct.Struct("<" + code).unpack_from
    at = OFFSETS[name]
    return lambda raw: unpack(raw, at)[0]


cap_len_of = field_reader("cap_len")
# The drain loop tests kind and flags on every record without decoding it: the low byte of each
# little-endian u16 holds every kind and flag the filter needs (asserted below).
KIND_BYTE = OFFSETS["kind"]
FLAGS_BYTE = OFFSETS["flags"]
assert CLOSE < 256 and max(RTF_UNKNOWN_FD, RTF_FILE_FD, SCF_ANNOTATE) < 256
_tgid_fd = struct.Struct("<I4xi")       # tgid, (tid), fd: adjacent fields read in one call
assert OFFSETS["fd"] - OFFSETS["tgid"] == 8


def tgid_fd_of(raw) -> tuple[int, int]:
    return _tgid_fd.unpack_from(raw, OFFSETS["tgid"])


ts_exit_of = field_reader("ts_exit")
ts_enter_of = field_reader("ts_enter")


def record_ts(raw) -> int:
    """When a raw record happened (its exit, else its entry), for pacing a replay."""
    return ts_exit_of(raw) or ts_enter_of(raw)


def encode(ev: Event) -> bytes:
    """The raw record for an Event (used for events made in user space and in tests)."""
    payload = ev.payload or b""
    return HEADER.pack(ev.ts_enter, ev.ts_exit, ev.aux_ts, ev.aux_ts2, ev.ret, ev.tgid, ev.tid, ev.fd,
                       ev.kind, ev.flags, len(payload), ev.peer_port, ev.family,
                       (ev.peer_addr or b"").ljust(16, b"\0")[:16]) + payload


def format_peer(family: int, addr: bytes, port: int) -> str | None:
    if family == AF_INET:
        return f"{ipaddress.IPv4Address(addr[:4])}:{port}"
    if family == AF_INET6:
        ip6 = ipaddress.IPv6Address(addr[:16])
        if ip6.ipv4_mapped:
            return f"{ip6.ipv4_mapped}:{port}"
        return f"[{ip6}]:{port}"
    return None


def peer_bytes(host: str) -> tuple[int, bytes]:
    """(family, 16-byte address) for an IP string, as the probe stores it."""
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return AF_INET, ip.packed.ljust(16, b"\0")
    return AF_INET6, ip.packed
