"""The trace file format: tracer/tracefile/recording.py against docs/TRACE_FORMAT.md."""
from __future__ import annotations

import atexit
import errno
import json
import os
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.kernel import events
from tracer.tracefile import recording
from tracer.errors import TracerError
from tracer.tracefile.recording import MAGIC, TraceReader, TraceWriter

REPO = Path(__file__).resolve().parent.parent
BLOCK_HEAD = struct.Struct("<BIIII")


def record(i: int, payload: bytes = b"", kind: int = events.READ) -> bytes:
    return events.encode(events.Event(ts_enter=1_000_000 + i * 1000, ts_exit=1_000_500 + i * 1000,
                                      ret=len(payload), tgid=42, tid=42, fd=7, kind=kind, payload=payload))


def stream(n: int) -> list[bytes]:
    """Records with empty, RESP and full 4096-byte payloads."""
    out = []
    for i in range(n):
        m = i % 5
        if m == 0:
            out.append(record(i, kind=events.EXEC))
        elif m == 1:
            out.append(record(i, b"*2\r\n$3\r\nGET\r\n$10\r\nkey:%06d\r\n" % i))
        elif m == 2:
            out.append(record(i, b"$3\r\nbar\r\n", kind=events.WRITE))
        elif m == 3:
            out.append(record(i, bytes((i + j) % 251 for j in range(4096))))
        else:
            out.append(record(i, b""))
    return out


def write_trace(path, records, **kw) -> TraceWriter:
    kw.setdefault("compress_budget", None)   # deterministic: every block compressed
    with TraceWriter(path, {"targets": [{"pid": 1, "port": 6379}]}, **kw) as w:
        for r in records:
            w.write(r)
    return w


def read_all(path) -> tuple[list[bytes], TraceReader]:
    with TraceReader(path) as r:
        recs = list(r.records())
    return recs, r


def blocks_of(path) -> tuple[int, list[tuple[int, int]]]:
    """(end of header, [(end offset, cumulative records)] per data block), by walking the bytes."""
    data = Path(path).read_bytes()
    (hlen,) = struct.unpack_from("<I", data, 8)
    off = start = 12 + hlen
    out, total = [], 0
    while off < len(data):
        kind, slen, _, count, _ = BLOCK_HEAD.unpack_from(data, off)
        off += BLOCK_HEAD.size + slen
        if kind == ord("B"):
            total += count
            out.append((off, total))
    return start, out


def one_line(err: TracerError) -> str:
    text = err.value.line() if hasattr(err, "value") else err.line()
    assert "\n" not in text and "\r" not in text
    assert "Traceback" not in text
    return text


# -- round trip -----------------------------------------------------------------------------------

def test_round_trip_many_records(tmp_path):
    recs = stream(3000)
    path = tmp_path / "t.rtrace"
    w = write_trace(path, recs, block_size=64 * 1024)
    assert w.blocks_written > 10 and w.records_written == len(recs)
    got, r = read_all(path)
    assert got == recs
    assert r.warnings == []
    assert r.blocks_read == w.blocks_written and r.records_read == len(recs)
    assert r.trailer["records"] == len(recs) and r.trailer["blocks"] == w.blocks_written
    assert [events.decode(x).payload for x in got[:5]] == [events.decode(x).payload for x in recs[:5]]
    assert len(events.decode(got[3]).payload) == 4096 and events.decode(got[4]).payload == b""


def test_write_many_bytes_like_and_empty_records(tmp_path):
    recs = stream(500) + [b""]
    path = tmp_path / "t.rtrace"
    with TraceWriter(path, {}, block_size=4096) as w:
        w.write_many(recs[:200])
        w.write(bytearray(recs[200]))
        w.write(memoryview(recs[201]))
        w.write_many(iter(recs[202:]))
        with pytest.raises(TypeError):
            w.write("not bytes")
        with pytest.raises(TypeError):
            w.write_many([recs[0], 5])
    got, r = read_all(path)
    assert got == recs + [recs[0]]   # the 5 was refused, the record before it was kept
    assert r.warnings == []


def test_records_can_be_read_again(tmp_path):
    recs = stream(300)
    path = tmp_path / "t.rtrace"
    write_trace(path, recs, block_size=2048)
    with TraceReader(path) as r:
        assert list(r.records()) == recs
        assert list(r) == recs
        assert r.records_read == len(recs)


def test_header_fields(tmp_path):
    path = tmp_path / "t.rtrace"
    target = {"pid": 9, "port": 6380, "redis_version": "7.2.4", "io_threads": 1,
              "appendonly": True, "appendfsync": "everysec"}
    with TraceWriter(path, {"targets": [target], "probes": ["io", "loop"], "capture_max": 1024,
                            "format_version": 99, "host": "h1"}):
        pass
    with TraceReader(path) as r:
        h = r.header
        list(r.records())
    assert h["format_version"] == 2 and h["codec"] == "zlib" and h["record_header_size"] == 80
    assert h["targets"] == [target] and h["probes"] == ["io", "loop"] and h["capture_max"] == 1024
    assert h["host"] == "h1" and h["tracer_version"] and h["kernel"]
    assert isinstance(h["created"], float) and isinstance(h["clock"]["mono_to_wall_ns"], int)
    assert r.trailer["records"] == 0 and r.warnings == []
    raw = path.read_bytes()
    assert raw[:8] == b"RTRACE\x00\x02"
    (hlen,) = struct.unpack_from("<I", raw, 8)
    assert json.loads(raw[12:12 + hlen]) == h


def test_unserialisable_header_creates_no_file(tmp_path):
    path = tmp_path / "t.rtrace"
    with pytest.raises(TypeError):
        TraceWriter(path, {"bad": object()})
    assert not path.exists()


def test_trailer_and_finished_writer(tmp_path):
    path = tmp_path / "t.rtrace"
    w = TraceWriter(path, {})
    w.write(record(1))
    w.write_trailer({"lost": 12, "ended": 123.5})
    with pytest.raises(ValueError):
        w.write(record(2))
    w.close()
    w.close()
    with pytest.raises(ValueError):
        w.flush()
    got, r = read_all(path)
    assert got == [record(1)]
    assert r.trailer["lost"] == 12 and r.trailer["ended"] == 123.5 and r.trailer["records"] == 1


def test_exception_inside_with_still_writes_the_records(tmp_path):
    path = tmp_path / "t.rtrace"
    with pytest.raises(KeyboardInterrupt):
        with TraceWriter(path, {}) as w:
            w.write(record(1))
            raise KeyboardInterrupt
    got, r = read_all(path)
    assert got == [record(1)] and r.trailer["aborted"] == "KeyboardInterrupt" and r.warnings == []


def test_interrupted_write_is_repaired_at_close(tmp_path):
    path = tmp_path / "t.rtrace"
    with pytest.raises(KeyboardInterrupt):
        with TraceWriter(path, {}) as w:
            w.write(record(1))
            w._buf += struct.pack("<I", 500) + b"half a record"   # Ctrl-C in the middle of write()
            w._count += 1
            raise KeyboardInterrupt
    got, r = read_all(path)
    assert got == [record(1)] and r.warnings == [] and r.trailer["records"] == 1


def test_uncompressed_blocks(tmp_path):
    recs = [os.urandom(200) for _ in range(300)]   # incompressible: stored as is
    path = tmp_path / "a.rtrace"
    w = write_trace(path, recs, block_size=4096)
    assert w.blocks_stored == w.blocks_written > 1
    assert read_all(path)[0] == recs
    path = tmp_path / "b.rtrace"
    write_trace(path, stream(200), codec="none", block_size=4096)
    got, r = read_all(path)
    assert got == stream(200) and r.header["codec"] == "none" and r.warnings == []
    path = tmp_path / "c.rtrace"
    w = write_trace(path, stream(2000), block_size=4096, compress_budget=0.0)
    assert w.blocks_stored >= 1 and read_all(path)[0] == stream(2000)


def test_oversized_record_refused(tmp_path):
    with TraceWriter(tmp_path / "t.rtrace", {}) as w:
        with pytest.raises(ValueError):
            w.write(b"\0" * (recording.MAX_RECORD + 1))


# -- file creation --------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o000, 0o277])
def test_mode_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / "t.rtrace"
        write_trace(path, stream(10))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_all(path)[0] == stream(10)


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "t.rtrace"
    path.write_bytes(b"precious")
    with pytest.raises(TracerError) as err:
        TraceWriter(path, {})
    assert "already exists" in one_line(err)
    assert path.read_bytes() == b"precious"


def test_overwrite_replaces_with_a_new_0600_file(tmp_path):
    path = tmp_path / "t.rtrace"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    write_trace(path, stream(5), overwrite=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_all(path)[0] == stream(5)


def test_overwrite_does_not_follow_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    link = tmp_path / "t.rtrace"
    link.symlink_to(victim)
    with pytest.raises(TracerError):
        TraceWriter(link, {})
    write_trace(link, stream(3), overwrite=True)
    assert victim.read_bytes() == b"keep me"
    assert not link.is_symlink() and read_all(link)[0] == stream(3)


def test_overwrite_refuses_a_directory_and_missing_dirs(tmp_path):
    with pytest.raises(TracerError) as err:
        TraceWriter(tmp_path, {}, overwrite=True)
    one_line(err)
    with pytest.raises(TracerError) as err:
        TraceWriter(tmp_path / "nope" / "t.rtrace", {})
    assert "does not exist" in one_line(err)


# -- damage: truncation, corruption, not-a-trace ----------------------------------------------------

def test_truncated_at_every_byte_offset(tmp_path):
    recs = stream(12)[:2] + [record(i, b"$3\r\nbar\r\n") for i in range(10)]
    full = tmp_path / "full.rtrace"
    write_trace(full, recs, block_size=400)
    data_start, blocks = blocks_of(full)
    assert len(blocks) == 3
    data = full.read_bytes()
    cut = tmp_path / "cut.rtrace"
    for size in range(len(data) + 1):
        cut.write_bytes(data[:size])
        if size < data_start:       # not even a header: nothing to read
            with pytest.raises(TracerError) as err:
                TraceReader(cut)
            one_line(err)
            continue
        got, r = read_all(cut)
        whole = [n for end, n in blocks if end <= size]
        kept = whole[-1] if whole else 0
        assert got == recs[:kept], size
        assert r.blocks_read == len(whole) and r.records_read == kept
        if size == len(data):
            assert r.warnings == [] and r.trailer is not None
        else:
            assert len(r.warnings) == 1 and r.trailer is None
            warning = r.warnings[0]
            last_end = max([end for end, _ in blocks if end <= size], default=data_start)
            if size == last_end:
                assert warning == (f"the recording ends without a trailer (the tracer stopped before closing "
                                   f"it): {kept:,} records read")
            else:
                assert warning == (f"the recording ends inside block {len(whole) + 1}, without a trailer (the "
                                   f"tracer stopped before closing it): {kept:,} records read, "
                                   f"{size - last_end:,} bytes at the end could not be read")


def test_crc_mismatch_skips_that_block_only(tmp_path):
    recs = stream(200)
    path = tmp_path / "t.rtrace"
    write_trace(path, recs, block_size=8192)
    _, blocks = blocks_of(path)
    assert len(blocks) >= 5
    data = bytearray(path.read_bytes())
    data[blocks[1][0] + BLOCK_HEAD.size + 5] ^= 0x40    # inside block 3's stored bytes
    path.write_bytes(bytes(data))
    got, r = read_all(path)
    assert got == recs[:blocks[1][1]] + recs[blocks[2][1]:]
    lost = blocks[2][1] - blocks[1][1]
    assert r.warnings == [
        f"block 3 at byte {blocks[1][0]:,} is corrupt (checksum mismatch): skipped it ({lost:,} records), "
        f"reading on from the next valid block at byte {blocks[2][0]:,}",
        f"the end trailer says 200 records but the file holds {200 - lost}: {lost} lost in the damaged blocks"]
    assert r.damaged_skipped == 1 and r.bytes_skipped == blocks[2][0] - blocks[1][0]
    assert r.trailer and r.trailer["records"] == 200


@pytest.mark.parametrize("where", ["kind", "length", "count", "body"])
def test_one_flipped_byte_costs_one_block(tmp_path, where):
    recs = stream(600)
    path = tmp_path / "t.rtrace"
    write_trace(path, recs, block_size=4096)
    _, blocks = blocks_of(path)
    data = bytearray(path.read_bytes())
    at = blocks[3][0] + {"kind": 0, "length": 3, "count": 10, "body": BLOCK_HEAD.size + 40}[where]
    data[at] ^= 0x10                                    # block 5: type, S, N or a stored byte
    path.write_bytes(bytes(data))
    got, r = read_all(path)
    assert got == recs[:blocks[3][1]] + recs[blocks[4][1]:]
    assert r.blocks_read == len(blocks) - 1 and r.trailer is not None
    assert r.warnings[0].startswith(f"block 5 at byte {blocks[3][0]:,} is corrupt (")
    assert r.bytes_skipped == blocks[4][0] - blocks[3][0]


def test_block_that_does_not_decompress(tmp_path):
    path = tmp_path / "t.rtrace"
    write_trace(path, [record(1)])
    data = bytearray(path.read_bytes())
    start, blocks = blocks_of(path)
    junk = b"\x78\x01not zlib at all"
    data[start:blocks[0][0]] = BLOCK_HEAD.pack(ord("B"), len(junk), 500, 1, zlib.crc32(junk)) + junk
    path.write_bytes(bytes(data))
    got, r = read_all(path)
    assert got == [] and "decompress" in r.warnings[0]


def test_huge_declared_block_lengths_use_no_memory(tmp_path):
    path = tmp_path / "t.rtrace"
    write_trace(path, [record(1)])
    good = path.read_bytes()
    _, blocks = blocks_of(path)
    for slen, rlen, words in [(2**32 - 1, 10, "over the 64 MiB limit"), (10, 2**32 - 1, "over the 64 MiB limit"),
                              (60 * 2**20, 60 * 2**20, "ends inside block 2")]:
        path.write_bytes(good[:blocks[0][0]] + BLOCK_HEAD.pack(ord("B"), slen, rlen, 1, 0) + b"x" * 100)
        tracemalloc.start()
        try:
            got, r = read_all(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got == [record(1)] and len(r.warnings) == 1 and words in r.warnings[0]
        assert peak < 4 * 2**20, peak


def test_data_after_the_trailer_is_reported(tmp_path):
    path = tmp_path / "t.rtrace"
    write_trace(path, [record(1)])
    with open(path, "ab") as f:
        f.write(b"junk")
    got, r = read_all(path)
    assert got == [record(1)] and r.trailer and r.warnings == ["4 bytes after the end trailer were ignored"]


def _header_file(path, header_bytes: bytes, magic: bytes = MAGIC) -> Path:
    path.write_bytes(magic + struct.pack("<I", len(header_bytes)) + header_bytes)
    return path


@pytest.mark.parametrize("name, content, words", [
    ("empty", b"", "is empty"),
    ("garbage", b"\x7fELF\x02\x01\x01" + bytes(200), "not a redis-tracer trace file"),
    ("text", b"hello world, this is not a trace\n", "not a redis-tracer trace file"),
    ("magic_prefix", b"RTRA", "cut short"),
    ("wrong_magic_version", b"RTRACE\x00\x03" + bytes(20), "format version 3; this redis-tracer reads format versions 1, 2"),
    ("huge_header", MAGIC + struct.pack("<I", 2**32 - 1) + b"{}", "corrupt header"),
    ("short_header", MAGIC + struct.pack("<I", 100) + b"{}", "cut short inside its header"),
    ("no_header_len", MAGIC + b"\x01", "cut short inside its header"),
])
def test_not_a_trace(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TracerError) as err:
        TraceReader(path)
    assert words in one_line(err)


@pytest.mark.parametrize("header, words", [
    (b'{"format_version": 3, "codec": "zlib"}', "format version 3; this redis-tracer reads format versions 1, 2"),
    (b'{"format_version": 1, "codec": "zstd"}', "cannot read"),
    (b'{"format_version": "1"}', "corrupt header"),
    (b'{"codec": "zlib"}', "corrupt header"),
    (b'{"format_version": 1,', "not valid JSON"),
    (b'\xff\xfe{}', "not valid JSON"),
    (b'[1, 2]', "not an object"),
    (b'[' * 100_000, "not valid JSON"),
    (b'{"format_version": ' + b"9" * 5000 + b"}", "not valid JSON"),
])
def test_bad_header(tmp_path, header, words):
    path = _header_file(tmp_path / "t.rtrace", header)
    with pytest.raises(TracerError) as err:
        TraceReader(path)
    assert words in one_line(err)


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    for path, words in [(fifo, "not a regular file"), (tmp_path, "directory"),
                        (tmp_path / "missing", "no trace file")]:
        with pytest.raises(TracerError) as err:
            TraceReader(path)
        assert words in one_line(err)
    assert time.monotonic() - t0 < 2


# -- fuzzing --------------------------------------------------------------------------------------

FUZZ_DIR = Path(tempfile.mkdtemp(prefix="rtrace-fuzz-"))
atexit.register(shutil.rmtree, FUZZ_DIR, True)
_VALID = FUZZ_DIR / "valid.rtrace"
write_trace(_VALID, stream(60), block_size=1500)
VALID = _VALID.read_bytes()


def _read_anything(data: bytes) -> None:
    path = FUZZ_DIR / "fuzz.rtrace"
    path.write_bytes(data)
    t0 = time.monotonic()
    try:
        with TraceReader(path) as r:
            n = sum(1 for _ in r.records())
        assert n == r.records_read
        assert all("\n" not in w for w in r.warnings)
    except TracerError as err:
        one_line(err)
    assert time.monotonic() - t0 < 2


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=600),
                 st.binary(max_size=600).map(lambda b: MAGIC + b),
                 st.binary(max_size=600).map(lambda b: VALID[:len(VALID) // 3] + b)))
def test_fuzz_arbitrary_bytes(data):
    _read_anything(data)


@settings(max_examples=400, deadline=2000)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=8),
       st.integers(0, len(VALID)))
def test_fuzz_byte_flips_in_a_valid_file(flips, cut):
    data = bytearray(VALID[:max(cut, 1)])
    for pos, x in flips:
        if pos < len(data):
            data[pos] ^= x
    _read_anything(bytes(data))


# -- crash safety ---------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, time
    from tracer.kernel import events
    from tracer.tracefile.recording import TraceWriter

    def record(i):
        return events.encode(events.Event(ts_enter=i, ts_exit=i + 1, kind=events.READ,
                                          payload=b"*2\\r\\n$3\\r\\nGET\\r\\n$10\\r\\nkey:%06d\\r\\n" % (i % 10**6)))

    w = TraceWriter(sys.argv[1], {}, block_size=16384, flush_interval=0.05)
    i = blocks = 0
    while True:
        w.write(record(i))
        i += 1
        if i % 50 == 0:
            w.maybe_flush()
            time.sleep(0.001)
        if w.blocks_written != blocks:
            blocks = w.blocks_written
            print(w.records_written, flush=True)
""")


def test_sigkill_mid_recording_reads_back_to_last_block(tmp_path):
    path = tmp_path / "killed.rtrace"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             env=env, cwd=REPO)
    reported = []
    try:
        deadline = time.monotonic() + 30
        while len(reported) < 5 and time.monotonic() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], 1)
            if ready:
                line = child.stdout.readline()
                if not line:
                    break
                reported.append(int(line))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert len(reported) >= 5, f"child reported {reported}, exit {child.returncode}"
    assert child.returncode == -signal.SIGKILL
    got, r = read_all(path)
    _, blocks = blocks_of(path)
    assert len(got) >= reported[-1] and len(got) == blocks[-1][1]
    for i, rec in enumerate(got):
        assert events.decode(rec).ts_enter == i
    assert r.trailer is None and len(r.warnings) == 1 and "without a trailer" in r.warnings[0]


def test_maybe_flush_is_time_based_and_readable_while_open(tmp_path):
    path = tmp_path / "t.rtrace"
    w = TraceWriter(path, {}, flush_interval=1.0)
    try:
        w.write(record(1))
        now = time.monotonic()
        assert w.maybe_flush(now) is False
        assert read_all(path)[0] == []
        assert w.maybe_flush(now + 1.5) is True
        assert w.maybe_flush(now + 1.6) is False
        got, r = read_all(path)
        assert got == [record(1)] and "without a trailer" in r.warnings[0]
        w.write(record(2))
        w.flush()
        assert read_all(path)[0] == [record(1), record(2)]
    finally:
        w.close()


class FakeDisk:
    """os.write that lets `blocks` writes through, then a short write, then ENOSPC."""

    def __init__(self, monkeypatch, blocks: int, partial: bool = True):
        self.real = os.write
        self.left = blocks
        self.partial = partial
        monkeypatch.setattr(os, "write", self)

    def __call__(self, fd, data):
        if self.left > 0:
            self.left -= 1
            return self.real(fd, data)
        if self.partial:
            self.partial = False
            return self.real(fd, bytes(data[:len(data) // 2]))
        no_space()


def no_space(*_args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("partial", [True, False])
def test_disk_full(tmp_path, monkeypatch, partial):
    recs = stream(400)
    path = tmp_path / "t.rtrace"
    with pytest.raises(TracerError) as err:
        with TraceWriter(path, {}, block_size=8192, compress_budget=None) as w:
            FakeDisk(monkeypatch, blocks=2, partial=partial)
            for rec in recs:
                w.write(rec)
    monkeypatch.undo()
    kept = w.records_written
    assert w.blocks_written == 2 and 0 < kept < len(recs)
    assert one_line(err).startswith(f"disk full writing {path}: {kept} records kept up to block 2")
    assert err.value.fix
    _, blocks = blocks_of(path)
    assert len(blocks) == 2          # the partial block was cut back, and a trailer says why
    got, r = read_all(path)
    assert got == recs[:kept]
    assert r.trailer["stopped"] == "disk full" and r.trailer["records"] == kept
    assert r.warnings == [f"recording stopped: disk full after {kept:,} records"]
    with pytest.raises((TracerError, ValueError)):
        w.write(recs[0])


def test_disk_full_without_room_for_the_trailer(tmp_path, monkeypatch):
    recs = stream(400)
    path = tmp_path / "t.rtrace"
    with pytest.raises(TracerError):
        with TraceWriter(path, {}, block_size=8192, compress_budget=None) as w:
            FakeDisk(monkeypatch, blocks=2)
            monkeypatch.setattr(os, "pwrite", no_space)
            for rec in recs:
                w.write(rec)
    monkeypatch.undo()
    _, blocks = blocks_of(path)
    assert os.path.getsize(path) == blocks[-1][0]      # cut back to the last block: no trailer
    got, r = read_all(path)
    assert got == recs[:w.records_written]
    assert r.warnings == [f"the recording ends without a trailer (the tracer stopped before closing it): "
                          f"{w.records_written:,} records read"]


def test_disk_full_at_creation_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "t.rtrace"
    FakeDisk(monkeypatch, blocks=0, partial=False)
    with pytest.raises(TracerError) as err:
        TraceWriter(path, {})
    monkeypatch.undo()
    one_line(err)
    assert not path.exists()


def test_disk_full_on_close(tmp_path, monkeypatch):
    path = tmp_path / "t.rtrace"
    w = TraceWriter(path, {})
    w.write(record(1))
    FakeDisk(monkeypatch, blocks=0, partial=False)
    with pytest.raises(TracerError) as err:
        w.close()
    monkeypatch.undo()
    assert "0 records kept up to block 0" in one_line(err)
    assert w.closed
    got, r = read_all(path)
    assert got == [] and r.warnings


def test_version_1_files_still_read_and_new_files_are_version_2(tmp_path):
    """Version 2 added ENGINE records (engine mode's aggregates); version 1 files are read as before."""
    old = Path(__file__).resolve().parent / "fixtures" / "single.rtrace"
    assert old.read_bytes()[:8] == b"RTRACE\x00\x01"
    with TraceReader(old) as r:
        assert r.header["format_version"] == 1 and sum(1 for _ in r.records()) > 100 and not r.warnings
    path = tmp_path / "new.rtrace"
    with TraceWriter(path, {}) as w:
        w.write(b"x" * 80)
    assert path.read_bytes()[:8] == b"RTRACE\x00\x02"
    with TraceReader(path) as r:
        assert r.header["format_version"] == 2 and list(r.records()) == [b"x" * 80]
