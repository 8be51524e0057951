"""probes/events.h is the one definition of the record layout: tracer/kernel/events.py must agree."""
import re
import struct
from pathlib import Path

from tracer.kernel import events

HEADER = (Path(__file__).resolve().parent.parent / "probes" / "events.h").read_text()
C_TYPES = {"__u64": "Q", "__s64": "q", "__u32": "I", "__s32": "i", "__u16": "H", "__u8": "B"}


def c_struct_fields(name: str):
    body = re.search(r"struct %s \{(.*?)\};" % name, HEADER, re.S).group(1)
    fields = []
    for line in body.splitlines():
        line = line.split("/*")[0].strip()
        m = re.match(r"(\w+)\s+(\w+)(?:\[(\d+)\])?;", line)
        if m:
            ctype, fname, count = m.groups()
            code = C_TYPES[ctype]
            fields.append((f"{count}s" if count and code == "B" else code, fname))
    return fields


def c_enum(name: str) -> dict:
    body = re.search(r"enum %s \{(.*?)\};" % name, HEADER, re.S).group(1)
    return {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body)}


def _packed_offsets(fields):
    """({name: offset}, size) of a packed ("<") struct, asserting C would lay it out the same: C puts
    fields at their natural alignment, so the two agree only when no field would be padded."""
    offsets, offset = {}, 0
    for code, name in fields:
        size = struct.calcsize("<" + code)
        align = 1 if code.endswith("s") else size
        assert offset % align == 0, f"{name} would be padded in C"
        offsets[name] = offset
        offset += size
    return offsets, offset


def test_fields_names_types_and_order_match():
    assert c_struct_fields("rt_event") == list(events.FIELDS)


def test_offsets_and_size_match_c_natural_alignment():
    offsets, size = _packed_offsets(events.FIELDS)
    assert size == events.HEADER_SIZE == 80
    # the byte offsets bpf_session.drain() reads without decoding
    assert (offsets["tgid"], offsets["fd"], offsets["kind"], offsets["flags"]) == (40, 48, 52, 54)


def test_enums_match():
    kinds = c_enum("rt_kind")
    assert kinds == {"RT_ACCEPT": events.ACCEPT, "RT_READ": events.READ, "RT_WRITE": events.WRITE,
                     "RT_CLOSE": events.CLOSE, "RT_FSYNC": events.FSYNC, "RT_LOOP": events.LOOP,
                     "RT_EXEC": events.EXEC, "RT_REQ": events.REQ, "RT_OFFCPU": events.OFFCPU,
                     "RT_RUNQ": events.RUNQ, "RT_FORK": events.FORK, "RT_SAMPLE": events.SAMPLE}
    assert events.FDINFO not in kinds.values()
    assert c_enum("rt_fd_kind") == {"FD_UNKNOWN": events.FD_UNKNOWN, "FD_CLIENT": events.FD_CLIENT,
                                    "FD_AOF": events.FD_AOF, "FD_IGNORE": events.FD_IGNORE,
                                    "FD_FILE": events.FD_FILE}
    assert c_enum("rt_flags") == {"RTF_WRITEV": events.RTF_WRITEV, "RTF_FDATASYNC": events.RTF_FDATASYNC,
                                  "RTF_UNKNOWN_FD": events.RTF_UNKNOWN_FD, "RTF_ACCEPT4": events.RTF_ACCEPT4,
                                  "RTF_EPOLL_PWAIT": events.RTF_EPOLL_PWAIT, "RTF_FILE_FD": events.RTF_FILE_FD,
                                  "RTF_ENGINE_RAW": events.RTF_ENGINE_RAW,
                                  "RTF_ENGINE_AT_CMD": events.RTF_ENGINE_AT_CMD}
    sched_flags = c_enum("rt_sched_flags")
    assert sched_flags == {"SCF_IN_EPOLL": events.SCF_IN_EPOLL, "SCF_STACK": events.SCF_STACK,
                           "SCF_ANNOTATE": events.SCF_ANNOTATE}
    assert not any(v & events.RTF_UNKNOWN_FD for v in sched_flags.values())   # drain() would classify an fd
    assert c_enum("rt_counter") == {"CNT_LOST": events.CNT_LOST, "CNT_LOOP_BUSY_NS": events.CNT_LOOP_BUSY_NS,
                                    "CNT_LOOP_IDLE_NS": events.CNT_LOOP_IDLE_NS, "CNT_LOOPS": events.CNT_LOOPS,
                                    "CNT_REFUSED_FULL": events.CNT_REFUSED_FULL,
                                    "CNT_REFUSED_ROOM": events.CNT_REFUSED_ROOM,
                                    "CNT_RESCUED": events.CNT_RESCUED,
                                    "CNT_REFUSED_AVAIL_MAX": events.CNT_REFUSED_AVAIL_MAX,
                                    "CNT_REFUSED_NS_MAX": events.CNT_REFUSED_NS_MAX,
                                    "CNT_REFUSED_CONS_POS": events.CNT_REFUSED_CONS_POS,
                                    "CNT_REFUSED_PROD_POS": events.CNT_REFUSED_PROD_POS,
                                    "CNT_MAX": events.CNT_MAX}


def test_engine_request_record_matches_and_shares_the_peeked_offsets():
    assert c_struct_fields("rt_req") == list(events.REQ_FIELDS)
    offsets, size = _packed_offsets(events.REQ_FIELDS)
    assert size == events.REQ_HEADER_SIZE == 88
    # drain() reads tgid, fd, kind and flags of any record at the rt_event offsets
    assert (offsets["tgid"], offsets["fd"], offsets["kind"], offsets["flags"]) == (40, 48, 52, 54)
    flags = c_enum("rt_req_flags")
    assert flags == {"RQF_SLOW": events.RQF_SLOW, "RQF_SAMPLED": events.RQF_SAMPLED, "RQF_STALL": events.RQF_STALL,
                     "RQF_VICTIM": events.RQF_VICTIM, "RQF_OVERFLOW": events.RQF_OVERFLOW,
                     "RQF_REDIRECT": events.RQF_REDIRECT}
    assert not any(v & events.RTF_UNKNOWN_FD for v in flags.values())   # drain() would classify the fd
    assert c_enum("rt_reply") == {"RPL_NONE": events.RPL_NONE, "RPL_OK": events.RPL_OK,
                                  "RPL_ERROR": events.RPL_ERROR, "RPL_NIL": events.RPL_NIL,
                                  "RPL_MOVED": events.RPL_MOVED, "RPL_ASK": events.RPL_ASK}


def test_encode_decode_round_trip():
    fam, addr = events.peer_bytes("127.0.0.1")
    ev = events.Event(ts_enter=1, ts_exit=2, aux_ts=3, aux_ts2=4, ret=-5, tgid=6, tid=7, fd=8,
                      kind=events.READ, flags=events.RTF_WRITEV, peer_port=6379, family=fam,
                      peer_addr=addr, payload=b"*1\r\n$4\r\nPING\r\n")
    back = events.decode(events.encode(ev))
    for _, name in events.FIELDS:
        if name != "cap_len":
            assert getattr(back, name) == getattr(ev, name), name
    assert back.cap_len == len(ev.payload) and back.payload == ev.payload
    assert back.peer == "127.0.0.1:6379"


def test_short_records_are_rejected_cleanly():
    import pytest

    with pytest.raises(ValueError):
        events.decode(b"\0" * 10)
    raw = bytearray(events.encode(events.Event(kind=events.READ, payload=b"abc")))
    with pytest.raises(ValueError):
        events.decode(bytes(raw[:-1]))
