"""`report` / `export` on fuzzed trace files, at the CLI level: a result or one clean line, never a
traceback, in bounded time. No root needed.

Three families of inputs (~240 files in all, counted in docs/SECURITY.md):
* arbitrary bytes, and arbitrary bytes behind a valid signature;
* valid files (good CRCs) whose *records* are hostile: short, lying cap_len, random kinds, fds,
  timestamps, peers and RESP-ish or random payloads: what the reader cannot catch, the pipeline must;
* a real-looking recording with byte flips, cuts and insertions.
"""
from __future__ import annotations

import io
import json
import os
import struct
import time
from contextlib import redirect_stderr, redirect_stdout

from eventstream import Stream, cmd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer import cli
from tracer.kernel import events
from tracer.tracefile.recording import MAGIC, TraceWriter

PER_RUN_S = 20.0        # a single report on a tiny file must never take long
COUNT = {"files": 0}    # inputs run (the docs quote the total)

SETTINGS = settings(deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with redirect_stdout(out), redirect_stderr(err):
        rc = cli.main(list(argv))   # an exception escaping here is the bug: it fails the test
    assert time.monotonic() - t0 < PER_RUN_S, argv
    return rc, out.getvalue(), err.getvalue()


def check_file(path: str, tmp_dir: str, export: bool = False) -> None:
    COUNT["files"] += 1
    rc, out, err = run_cli("report", path, "--json")
    assert "Traceback" not in err
    if rc == 0:
        assert out.count("\n") == 1 and isinstance(json.loads(out), dict)
    else:
        assert rc == 1 and out == ""   # a bad file is a runtime failure, not a usage error
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("redis-tracer: "), err
    for line in err.splitlines():
        assert line.startswith("redis-tracer: "), err
    rc2, out2, err2 = run_cli("report", path)       # the text report renders the same data
    assert rc2 == rc and "Traceback" not in err2
    if export:
        target = os.path.join(tmp_dir, "out.json")
        rc3, _, err3 = run_cli("export", path, "-o", target)
        assert rc3 == rc and "Traceback" not in err3
        if rc3 == 0:
            with open(target) as f:
                json.load(f)
        assert not os.path.exists(target + ".part")


def write_file(tmp_path, name: str, data: bytes) -> str:
    path = os.path.join(str(tmp_path), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# -- 1. arbitrary bytes ------------------------------------------------------------------------
@SETTINGS
@given(st.binary(max_size=2000), st.booleans())
def test_arbitrary_bytes(tmp_path_factory, data, signed):
    tmp = tmp_path_factory.mktemp("fz")
    if signed:
        data = MAGIC + data
    check_file(write_file(tmp, "f.rtrace", data), str(tmp))


# -- 2. valid framing, hostile records -----------------------------------------------------------
RESP_BITS = [b"*", b"$", b"+", b"-", b":", b"\r\n", b"\r", b"\n", b"3", b"-1", b"99999999999", b"GET", b"SET",
             b"AUTH", b"HELLO", b"CONFIG", b"ACL", b"SETUSER", b"MULTI", b"EXEC", b"SUBSCRIBE", b"message",
             b"k", b"\x00", b"\xff", b"ERR x", b"MOVED 1 1.2.3.4:5", b">", b"%", b"|", b"~", b"!", b"=", b"_"]
payload_st = st.one_of(st.binary(max_size=300),
                       st.lists(st.sampled_from(RESP_BITS), max_size=60).map(b"".join))
u64 = st.one_of(st.integers(0, 2**64 - 1), st.integers(10**9, 10**9 + 10**10), st.just(0))


@st.composite
def records(draw):
    kind = draw(st.one_of(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 100, 101]), st.integers(0, 65535)))
    payload = draw(payload_st)
    fields = [draw(u64), draw(u64), draw(u64), draw(u64),
              draw(st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(-5, 10**7))),
              draw(st.sampled_from([1000, 1001, 0, 2**32 - 1])), draw(st.sampled_from([1000, 1002, 0])),
              draw(st.one_of(st.integers(-2**31, 2**31 - 1), st.integers(-1, 20))),
              kind, draw(st.integers(0, 65535)),
              draw(st.one_of(st.just(len(payload)), st.integers(0, 2**32 - 1))),
              draw(st.integers(0, 65535)), draw(st.sampled_from([0, 2, 10, 1, 65535])),
              draw(st.binary(min_size=16, max_size=16))]
    raw = events.HEADER.pack(*fields) + payload
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    return raw if cut is None else raw[:cut]


header_st = st.fixed_dictionaries({}, optional={
    "targets": st.one_of(st.just([]), st.just([{}]), st.just([{"pid": "x", "port": None}]),
                         st.just("nope"), st.just([1, 2])),
    "stall_ms": st.one_of(st.just(0), st.just(-1), st.just(50), st.just("50"), st.just(1e308)),
    "show_values": st.one_of(st.booleans(), st.just("yes")),
    "exec_probes": st.booleans(),
    "clock": st.one_of(st.just({}), st.just({"mono_to_wall_ns": "x"}), st.just({"mono_to_wall_ns": 2**70})),
})


@SETTINGS
@given(st.lists(records(), max_size=40), header_st)
def test_valid_files_with_hostile_records(tmp_path_factory, recs, header):
    tmp = tmp_path_factory.mktemp("fz")
    path = os.path.join(str(tmp), "f.rtrace")
    with TraceWriter(path, header, block_size=2048) as w:
        w.write_many(recs)
    check_file(path, str(tmp), export=True)


# -- 3. a real-looking recording, damaged ------------------------------------------------------------
def _good_trace(path) -> bytes:
    s = Stream()
    s.accept(7, 40000)
    s.wake()
    for i in range(300):
        s.read(7, cmd("SET", f"k{i}", "v" * (i % 50)), arrival_us_before=5)
        s.write(7, b"+OK\r\n")
        s.read(7, cmd("AUTH", "pw"))
        s.write(7, b"-WRONGPASS invalid\r\n")
    s.read(7, b"\x00\xffgarbage\r\n*1\r\n$999999999\r\n")
    s.loop(10, 70_000)
    s.close(7)
    with TraceWriter(path, {"targets": [{"pid": s.pid, "port": 6379}]}, block_size=2048) as w:
        w.write_many(s.raw())
    with open(path, "rb") as f:
        return f.read()


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
       st.one_of(st.none(), st.integers(0, 10**6)), st.one_of(st.none(), st.binary(min_size=1, max_size=40)))
def test_damaged_recordings(tmp_path_factory, flips, cut, insert):
    tmp = tmp_path_factory.mktemp("fz")
    data = bytearray(_good_trace(os.path.join(str(tmp), "good.rtrace")))
    for pos, value in flips:
        data[pos % len(data)] = value
    if insert is not None:
        at = (cut or 0) % len(data)
        data[at:at] = insert
    elif cut is not None:
        del data[cut % len(data):]
    check_file(write_file(tmp, "f.rtrace", bytes(data)), str(tmp))


def test_short_and_lying_records_in_a_valid_file(tmp_path):
    """The cases the fuzzers found first, kept as plain regression tests."""
    good = events.encode(events.Event(kind=events.READ, tgid=1, tid=1, fd=5, ret=14, payload=cmd("PING")))
    lying = bytearray(good)
    struct.pack_into("<I", lying, 56, 10**6)            # cap_len far beyond the record
    for recs in ([b""], [b"abc"], [bytes(lying)], [good[:79]], [good, b"\x00" * 80, bytes(lying), good]):
        path = str(tmp_path / "f.rtrace")
        if os.path.exists(path):
            os.unlink(path)
        with TraceWriter(path, {}) as w:
            w.write_many(recs)
        check_file(path, str(tmp_path), export=True)


def test_count_of_fuzzed_inputs():
    # runs last in this file (pytest keeps file order): the number docs/SECURITY.md quotes
    assert COUNT["files"] >= 200, COUNT
