"""The trace file: raw probe records written as compressed, checksummed blocks, and read back.

docs/TRACE_FORMAT.md is the byte-by-byte description; this module is its only
implementation. In short:

    magic  b"RTRACE\\x00\\x01"
    header u32 length + JSON object
    blocks u8 type ('B' data / 'T' trailer), u32 stored length, u32 raw length,
           u32 record count, u32 crc32(stored bytes), stored bytes
           raw block = records, each u32 length + record bytes

Writing appends whole blocks with one os.write each, so a tracer killed at any
moment leaves a file that reads back up to its last complete block. Reading
streams one block at a time in bounded memory and turns every kind of damage
into either a warning (a damaged block is skipped: reading resumes at the next
block whose checksum matches) or a TracerError with one line; it never hangs and
never shows a traceback.
"""
from __future__ import annotations

import errno
import json
import os
import platform
import re
import socket
import stat
import struct
import time
import zlib
from typing import Iterator

from tracer import __version__
from tracer.kernel import events
from tracer.errors import TracerError
from tracer.options import CAPTURE_BYTES

FORMAT_VERSION = 2               # 2: ENGINE records (the engine's aggregates) may appear in the stream
READABLE_VERSIONS = (1, 2)       # version 1 files are version 2 files without ENGINE records
MAGIC = b"RTRACE\x00" + bytes([FORMAT_VERSION])
_MAGIC_STEM = MAGIC[:7]          # "RTRACE\0": byte 7 is the format generation

BLOCK_DATA = b"B"[0]
BLOCK_TRAILER = b"T"[0]
_BLOCK_HEAD = struct.Struct("<BIIII")   # type, stored length, raw length, record count, crc32
BLOCK_HEAD_SIZE = _BLOCK_HEAD.size      # 17
_U32 = struct.Struct("<I")
_pack_u32 = _U32.pack

BLOCK_TARGET = 256 * 1024        # raw bytes buffered before a block is written
FLUSH_INTERVAL = 1.0             # seconds: maybe_flush() writes older buffered records
MAX_BLOCK = 64 * 1024 * 1024     # larger declared lengths are corruption
MAX_HEADER = 16 * 1024 * 1024
MAX_RECORD = 16 * 1024 * 1024    # a record can never be this large (CAPTURE_MAX is KiB)
COMPRESS_BUDGET = 0.25           # share of wall time the writer may spend compressing

ZLIB_LEVEL = 1
CODECS = ("zlib", "none")        # what this module writes and reads
SCAN_CHUNK = 1024 * 1024         # bytes read at a time while looking for the block after a damaged one
_BLOCK_TYPE_BYTE = re.compile(b"[BT]")

__all__ = ["TraceWriter", "TraceReader", "MAGIC", "FORMAT_VERSION", "CODECS"]


def _show(path) -> str:
    """A path for a one-line message."""
    text = os.fsdecode(path)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _clip(value, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _parse_int(text: str) -> int:
    # json.loads would happily build a million-digit int (slow before 3.11); no field needs one.
    if len(text) > 40:
        raise ValueError("number too long")
    return int(text)


def _loads(data: bytes):
    return json.loads(data.decode("utf-8"), parse_int=_parse_int)


def _zlib_compress(data: bytes) -> bytes:
    return zlib.compress(data, ZLIB_LEVEL)


class TraceWriter:
    """Write a trace file: `with TraceWriter(path, header) as w: w.write(record)`.

    The file is created mode 0600 (it holds request and reply bytes). An existing
    path is refused unless overwrite=True, which removes it and creates a new
    file in its place (a fresh inode owned by us: no symlink or hard link is
    followed, nobody keeps a descriptor on it).

    Records are buffered and written as one block when ~256 KiB are pending,
    on flush(), on maybe_flush() once the last flush is older than
    flush_interval, and at close. The writer compresses a block with zlib
    level 1 while compressing takes at most `compress_budget` of wall time;
    beyond that (or when it does not shrink) a block is stored as is, so a fast
    stream is never slowed to the compressor's speed. None = always compress.
    """

    def __init__(self, path, header: dict, *, overwrite: bool = False, codec: str = "zlib",
                 block_size: int = BLOCK_TARGET, flush_interval: float = FLUSH_INTERVAL,
                 compress_budget: float | None = COMPRESS_BUDGET):
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, not {codec!r}")
        if not 0 < block_size <= MAX_BLOCK // 2:
            raise ValueError(f"block_size must be in 1..{MAX_BLOCK // 2}")
        self.path = os.fspath(path)
        self.header = self._complete_header(header, codec)
        head_json = json.dumps(self.header, separators=(",", ":"), allow_nan=False).encode("utf-8")
        if len(head_json) > MAX_HEADER:
            raise ValueError(f"trace header of {len(head_json)} bytes is over {MAX_HEADER}")

        self._compress = _zlib_compress if codec == "zlib" else None
        self._block_size = block_size
        self._flush_interval = flush_interval
        self._budget = compress_budget
        self._win_start = time.monotonic()
        self._win_busy = 0.0

        self._buf = bytearray()          # the next block's raw body, records already framed
        self._count = 0                  # records in _buf
        self._last_flush = time.monotonic()
        self._finished = False           # trailer written
        self._failed = False             # a write failed: nothing more goes to the file
        self.records_written = 0         # records in complete blocks on disk
        self.blocks_written = 0          # data blocks on disk
        self.blocks_stored = 0           # data blocks kept uncompressed (budget / incompressible)
        self.bytes_written = 0           # file size so far

        self._fd = self._create(overwrite)
        try:
            self._append(MAGIC + _U32.pack(len(head_json)) + head_json, header=True)
        except TracerError:
            os.close(self._fd)
            self._fd = -1
            try:
                os.unlink(self.path)
            except OSError:
                pass
            raise

    # -- setup ---------------------------------------------------------------------------------

    @staticmethod
    def _complete_header(header: dict, codec: str) -> dict:
        if not isinstance(header, dict):
            raise TypeError("header must be a dict")
        h = dict(header)
        h["format_version"] = FORMAT_VERSION
        h["codec"] = codec
        h["record_header_size"] = events.HEADER_SIZE
        h.setdefault("tracer_version", __version__)
        h.setdefault("host", socket.gethostname())
        h.setdefault("kernel", platform.release())
        h.setdefault("created", time.time())
        h.setdefault("clock", {"mono_to_wall_ns": time.time_ns() - time.monotonic_ns()})
        h.setdefault("targets", [])
        h.setdefault("probes", [])
        h.setdefault("capture_max", CAPTURE_BYTES)
        return h

    def _create(self, overwrite: bool) -> int:
        shown = _show(self.path)
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
        for attempt in (1, 2):
            try:
                fd = os.open(self.path, flags, 0o600)
                break
            except FileExistsError:
                if not overwrite:
                    raise TracerError(f"{shown} already exists; not overwriting it",
                                      fix="choose another file name, or remove the old trace first") from None
                if attempt == 2:
                    raise TracerError(f"{shown} was created by someone else while it was being replaced",
                                      fix="check who else writes there, or choose another path") from None
                try:
                    st = os.lstat(self.path)
                    if stat.S_ISDIR(st.st_mode):
                        raise TracerError(f"{shown} is a directory; not replacing it",
                                          fix="give a file name for the trace")
                    os.unlink(self.path)   # a symlink is removed itself, its target is left alone
                except FileNotFoundError:
                    pass
                except OSError as err:
                    raise TracerError(f"cannot replace {shown}: {err.strerror}",
                                      fix="remove it yourself or choose another path") from None
            except FileNotFoundError:
                raise TracerError(f"cannot create {shown}: directory "
                                  f"{_show(os.path.dirname(os.path.abspath(self.path)))} does not exist",
                                  fix="create the directory or choose another path") from None
            except PermissionError:
                raise TracerError(f"cannot create {shown}: permission denied",
                                  fix="write the trace to a directory you can write to") from None
            except OSError as err:
                raise TracerError(f"cannot create {shown}: {err.strerror}",
                                  fix="choose another path") from None
        os.fchmod(fd, 0o600)   # a restrictive umask must not leave the owner unable to read it
        return fd

    # -- writing -------------------------------------------------------------------------------

    def write(self, record: bytes) -> None:
        """Append one raw record (bytes; any other bytes-like object is copied)."""
        if type(record) is not bytes:
            record = self._as_bytes(record)
        n = len(record)
        if n > MAX_RECORD:
            self._as_bytes(record)
        buf = self._buf
        buf += _pack_u32(n)
        buf += record
        self._count += 1
        if len(buf) >= self._block_size:
            self._flush_block()

    def write_many(self, records) -> None:
        """Append raw records in order (one call per ring-buffer poll is cheapest)."""
        buf = self._buf
        limit = self._block_size
        count = 0
        try:
            for record in records:
                if type(record) is not bytes:
                    record = self._as_bytes(record)
                n = len(record)
                if n > MAX_RECORD:
                    self._as_bytes(record)
                buf += _pack_u32(n)
                buf += record
                count += 1
                if len(buf) >= limit:
                    self._count += count
                    count = 0
                    self._flush_block()
                    buf = self._buf
                    limit = self._block_size
        finally:
            self._count += count

    def _as_bytes(self, record) -> bytes:
        self._usable()
        record = bytes(memoryview(record))   # TypeError for anything that is not bytes-like
        if len(record) > MAX_RECORD:
            raise ValueError(f"a record of {len(record)} bytes is over the {MAX_RECORD}-byte limit")
        return record

    def flush(self) -> None:
        """Write the buffered records now as one block."""
        self._usable()
        if self._count:
            self._flush_block()
        self._last_flush = time.monotonic()

    def maybe_flush(self, now: float | None = None) -> bool:
        """Flush if the last flush is older than flush_interval (now: time.monotonic()).

        Call it from the record loop after every poll so that a killed tracer loses
        at most ~flush_interval of records. Returns True when it wrote a block.
        """
        if now is None:
            now = time.monotonic()
        if now - self._last_flush < self._flush_interval:
            return False
        self._last_flush = now
        if not self._count:
            return False
        self._usable()
        self._flush_block()
        return True

    def write_trailer(self, summary: dict) -> None:
        """Flush and end the trace with a trailer: `summary` (lost events etc.) plus
        the writer's own "records", "blocks" and "ended" (unix s). Once only; close() follows."""
        self._usable()
        if not isinstance(summary, dict):
            raise TypeError("summary must be a dict")
        if self._count:
            self._flush_block()
        self._write_block(BLOCK_TRAILER, self._trailer_body(summary), 0)
        self._finished = True
        self._block_size = -1   # write() now reaches _usable() and raises

    def _trailer_body(self, summary: dict) -> bytes:
        trailer = dict(summary)
        trailer["records"] = self.records_written
        trailer["blocks"] = self.blocks_written
        trailer["blocks_uncompressed"] = self.blocks_stored
        trailer.setdefault("ended", time.time())
        return json.dumps(trailer, separators=(",", ":"), allow_nan=False).encode("utf-8")

    def close(self, *, aborted: str | None = None) -> None:
        """Flush, write a trailer if write_trailer() was not called, sync and close.

        `aborted` (an exception name) is put in that trailer. After a failed write
        the file is only closed: it already reads back up to its last block.
        """
        if self._fd < 0:
            return
        try:
            if not self._failed and not self._finished:
                if aborted:
                    self._repair()
                self.write_trailer({"aborted": aborted} if aborted else {})
            if not self._failed:
                try:
                    os.fsync(self._fd)
                except OSError as err:
                    if err.errno not in (errno.EINVAL, errno.EROFS):
                        self._failed = True
                        raise self._write_error(err) from None
        finally:
            os.close(self._fd)
            self._fd = -1
            self._block_size = -1   # write() now reaches _usable() and raises

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._fd >= 0:
            try:
                self.close(aborted=exc_type.__name__)
            except TracerError:
                pass   # the exception already on its way out is the one to report
        else:
            self.close()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    # -- internals -----------------------------------------------------------------------------

    def _usable(self) -> None:
        if self._fd < 0:
            raise ValueError("write to a closed TraceWriter")
        if self._failed:
            raise TracerError(f"{_show(self.path)} is unusable after an earlier write error",
                              fix="see the first error")
        if self._finished:
            raise ValueError("write after write_trailer(): the trace is finished")

    def _repair(self) -> None:
        """Drop a record half-appended when an exception (Ctrl-C) interrupted write()."""
        buf = self._buf
        pos = count = 0
        while pos + 4 <= len(buf):
            nxt = pos + 4 + _U32.unpack_from(buf, pos)[0]
            if nxt > len(buf):
                break
            pos, count = nxt, count + 1
        del buf[pos:]
        self._count = count

    def _flush_block(self) -> None:
        self._usable()
        raw, count = self._buf, self._count
        self._buf = bytearray()
        self._count = 0
        self._write_block(BLOCK_DATA, raw, count)
        self._last_flush = time.monotonic()

    def _encode(self, raw: bytes) -> bytes:
        """The stored form of a block body: compressed, or raw when that is not worth it."""
        if self._compress is None:
            return raw
        budget = self._budget
        if budget is None:
            packed = self._compress(raw)
        else:
            now = time.monotonic()
            if now - self._win_start >= 1.0:
                self._win_start, self._win_busy = now, 0.0
            elif self._win_busy > budget * (now - self._win_start):
                return raw       # over budget: store this one, keep up with the stream
            packed = self._compress(raw)
            self._win_busy += time.monotonic() - now
        return packed if len(packed) < len(raw) else raw

    def _write_block(self, kind: int, raw, count: int) -> None:
        stored = self._encode(raw)
        if kind == BLOCK_DATA and stored is raw:
            self.blocks_stored += 1
        head = _BLOCK_HEAD.pack(kind, len(stored), len(raw), count, zlib.crc32(stored))
        self._append(head + stored)
        if kind == BLOCK_DATA:
            self.blocks_written += 1
            self.records_written += count

    def _append(self, frame: bytes, header: bool = False) -> None:
        """One os.write of a complete frame (looping only on a short write)."""
        start = self.bytes_written
        done = 0
        try:
            view = memoryview(frame)
            while done < len(frame):
                n = os.write(self._fd, view[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += n
        except OSError as err:
            self._failed = True
            whole = not done
            if done:
                try:
                    os.ftruncate(self._fd, start)   # back to the last complete block
                    whole = True
                except OSError:
                    pass
            if header:
                raise TracerError(f"cannot create {_show(self.path)}: {err.strerror or err}",
                                  fix="free space on that disk or choose another path") from None
            if whole:
                self._end_early(start, err)
            raise self._write_error(err) from None
        self.bytes_written = start + done

    def _end_early(self, at: int, err: OSError) -> None:
        """After a failed block, try to end the file at `at` with a small trailer saying why, so the
        reader can tell "disk full after N records" from a killed tracer. If even that does not fit,
        the file is cut back to `at`: it still reads up to its last block."""
        body = self._trailer_body({"stopped": _stop_reason(err)})
        frame = _BLOCK_HEAD.pack(BLOCK_TRAILER, len(body), len(body), 0, zlib.crc32(body)) + body
        try:
            # pwrite: after the ftruncate the file offset is still past the cut-off block
            written = os.pwrite(self._fd, frame, at)
        except OSError:
            written = -1
        if written == len(frame):
            self.bytes_written = at + written
            return
        try:
            os.ftruncate(self._fd, at)
        except OSError:
            pass

    def _write_error(self, err: OSError) -> TracerError:
        self._block_size = -1   # write() now reaches _usable() and raises
        shown = _show(self.path)
        where = _show(os.path.dirname(os.path.abspath(self.path)))
        kept = f"{self.records_written} records kept up to block {self.blocks_written}"
        reason = _stop_reason(err)
        if err.errno == errno.ENOSPC:
            return TracerError(f"{reason} writing {shown}: {kept}",
                               fix=f"free space on the file system of {where} or record to another disk; "
                                   f"the file reads back up to block {self.blocks_written}")
        if err.errno == getattr(errno, "EDQUOT", -1):
            return TracerError(f"{reason} writing {shown}: {kept}",
                               fix=f"free space in your quota or record to another disk; "
                                   f"the file reads back up to block {self.blocks_written}")
        return TracerError(f"cannot write {shown}: {err.strerror or err}: {kept}",
                           fix=f"check the disk holding {where}; the file reads back up to block "
                               f"{self.blocks_written}")


def _stop_reason(err: OSError) -> str:
    """Why a recording stopped early, as its trailer's "stopped" says it."""
    if err.errno == errno.ENOSPC:
        return "disk full"
    if err.errno == getattr(errno, "EDQUOT", -1):
        return "disk quota exceeded"
    return f"write error ({err.strerror or err})"


class TraceReader:
    """Read a trace file: `.header`, then `for record in reader.records(): ...`.

    Opening checks the magic and header (TracerError with one line when the file
    is not a trace, is of another format version, or has a corrupt header).
    records() streams raw records block by block; damage after the header ends the
    stream with a line in `.warnings` instead of an exception. `.trailer` is the
    trailer dict once records() has reached it (None when the file has none).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.header: dict = {}
        self.codec = "none"
        self.warnings: list[str] = []
        self.trailer: dict | None = None
        self.blocks_read = 0        # complete data blocks read so far
        self.records_read = 0       # records in those blocks
        self.damaged_skipped = 0    # damaged stretches skipped to the next valid block
        self.bytes_skipped = 0      # bytes in them
        self.offset = 0             # where the block being read ends (progress: offset / size)
        self._scan_budget = 0
        self._header_warnings: list[str] = []
        self._fd = self._open()
        try:
            self._data_start = self._read_header()
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> int:
        shown = _show(self.path)
        try:
            # O_NONBLOCK: a FIFO given by mistake must not block the open.
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise TracerError(f"no trace file at {shown}", fix="check the path") from None
        except IsADirectoryError:
            raise TracerError(f"{shown} is a directory, not a trace file",
                              fix="give the path of a file written by `redis-tracer record`") from None
        except PermissionError:
            raise TracerError(f"cannot read {shown}: permission denied",
                              fix="trace files are mode 0600: read it as the user who recorded it, or as root") from None
        except OSError as err:
            raise TracerError(f"cannot read {shown}: {err.strerror or err}", fix="check the path") from None
        try:
            st = os.fstat(fd)
        except OSError as err:
            os.close(fd)
            raise TracerError(f"cannot read {shown}: {err.strerror or err}", fix="check the path") from None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise TracerError(f"{shown} is {kind}, not a trace file",
                              fix="give the path of a file written by `redis-tracer record`")
        return fd

    def _pread(self, n: int, offset: int) -> bytes:
        try:
            return os.pread(self._fd, n, offset)
        except OSError as err:
            raise TracerError(f"cannot read {_show(self.path)}: {err.strerror or err}",
                              fix="check the disk") from None

    @property
    def size(self) -> int:
        """The file's size in bytes now."""
        return self._size()

    def _size(self) -> int:
        try:
            return os.fstat(self._fd).st_size
        except OSError as err:
            raise TracerError(f"cannot read {_show(self.path)}: {err.strerror or err}",
                              fix="check the disk") from None

    def _read_header(self) -> int:
        shown = _show(self.path)
        not_trace = "give the path of a file written by `redis-tracer record`"
        head = self._pread(len(MAGIC) + 4, 0)
        magic = head[:len(MAGIC)]
        if not head:
            raise TracerError(f"{shown} is empty, not a trace file",
                              fix="the recording wrote nothing: see the recorder's error")
        if magic[:7] != _MAGIC_STEM or len(magic) < len(MAGIC) or magic[7] not in READABLE_VERSIONS:
            if len(magic) == len(MAGIC) and magic[:7] == _MAGIC_STEM:
                raise TracerError(f"{shown} is trace format version {magic[7]}; this redis-tracer reads "
                                  f"format versions {', '.join(map(str, READABLE_VERSIONS))}",
                                  fix=f"read it with the redis-tracer release that wrote it")
            if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
                raise TracerError(f"{shown} is cut short: {len(magic)} bytes, less than a trace file's signature",
                                  fix="the recorder was stopped while creating it; record again")
            raise TracerError(f"{shown} is not a redis-tracer trace file (it does not start with "
                              f"the RTRACE signature)", fix=not_trace)
        if len(head) < len(MAGIC) + 4:
            raise TracerError(f"{shown} is cut short inside its header ({len(head)} bytes)",
                              fix="the recorder was stopped while creating it; record again")
        (hlen,) = _U32.unpack_from(head, len(MAGIC))
        if hlen > MAX_HEADER:
            raise TracerError(f"{shown} has a corrupt header: it declares {hlen:,} bytes of header "
                              f"(at most {MAX_HEADER:,} is valid)", fix=not_trace)
        start = len(MAGIC) + 4
        body = self._pread(hlen, start) if hlen else b""
        if len(body) < hlen:
            raise TracerError(f"{shown} is cut short inside its header ({start + len(body)} of "
                              f"{start + hlen} bytes)",
                              fix="the recorder was stopped while creating it; record again")
        try:
            header = _loads(body)
        except (ValueError, RecursionError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TracerError(f"{shown} has a corrupt header: not valid JSON ({_show(reason)})",
                              fix=not_trace) from None
        if not isinstance(header, dict):
            raise TracerError(f"{shown} has a corrupt header: JSON {type(header).__name__}, not an object",
                              fix=not_trace)
        version = header.get("format_version")
        if type(version) is not int:
            raise TracerError(f"{shown} has a corrupt header: format_version is {_clip(version)}, "
                              f"not a number", fix=not_trace)
        if version not in READABLE_VERSIONS:
            raise TracerError(f"{shown} is trace format version {version}; this redis-tracer reads "
                              f"format versions {', '.join(map(str, READABLE_VERSIONS))}",
                              fix="read it with the redis-tracer release that wrote it")
        codec = header.get("codec", "zlib")
        if codec not in CODECS:
            raise TracerError(f"{shown} is compressed with {_clip(codec)}, which this redis-tracer cannot "
                              f"read (it reads {', '.join(CODECS)})",
                              fix="read it with the redis-tracer release that wrote it")
        size = header.get("record_header_size")
        if size != events.HEADER_SIZE:
            self._header_warnings.append(
                f"records have a {_clip(size)}-byte header, this redis-tracer decodes "
                f"{events.HEADER_SIZE}-byte headers: decoded events may be wrong")
        self.header = header
        self.codec = codec
        return start + hlen

    # -- reading -------------------------------------------------------------------------------

    def records(self) -> Iterator[bytes]:
        """Raw records in file order, one block in memory at a time.

        Each call starts again from the first block and resets warnings and counters.
        """
        if self._fd < 0:
            raise ValueError("records() on a closed TraceReader")
        self.warnings = list(self._header_warnings)
        self.trailer = None
        self.blocks_read = 0
        self.records_read = 0
        self.damaged_skipped = 0
        self.bytes_skipped = 0
        return self._records()

    __iter__ = records

    def _records(self) -> Iterator[bytes]:
        unpack_u32 = _U32.unpack_from
        offset = self._data_start
        size = self._size()
        self._scan_budget = 2 * size + MAX_BLOCK
        while True:
            if offset + BLOCK_HEAD_SIZE > size:
                size = self._size()   # the file may still be growing
            head = self._pread(BLOCK_HEAD_SIZE, offset) if offset < size else b""
            if not head:
                self.warnings.append(f"the recording ends without a trailer (the tracer stopped before "
                                     f"closing it): {self.records_read:,} records read")
                return
            where = f"block {self.blocks_read + 1} at byte {offset:,}"
            if len(head) < BLOCK_HEAD_SIZE:
                self._cut_short(offset, size)
                return
            kind, slen, rlen, count, crc = _BLOCK_HEAD.unpack(head)
            damage = raw = None
            end = offset + BLOCK_HEAD_SIZE + slen
            if kind not in (BLOCK_DATA, BLOCK_TRAILER):
                damage = f"unknown block type 0x{kind:02x}"
            elif slen > MAX_BLOCK or rlen > MAX_BLOCK:
                damage = f"declares {max(slen, rlen):,} bytes, over the {MAX_BLOCK // 2**20} MiB limit"
            else:
                if end > size:
                    size = self._size()
                stored = self._pread(slen, offset + BLOCK_HEAD_SIZE) if end <= size else b""
                if len(stored) < slen:
                    # the last block, cut short; or a damaged length pointing past the end
                    size = self._size()
                    damage = "it runs past the end of the file"
                elif zlib.crc32(stored) != crc:
                    damage = "checksum mismatch"
                else:
                    raw = self._decode(stored, rlen)
                    if raw is None:
                        damage = f"it does not decompress to its declared {rlen:,} bytes"
                    elif kind == BLOCK_DATA and not self._framed(raw, rlen, count):
                        damage = "its records do not add up"
            if damage is not None:
                # Resynchronise on the next valid block: one damaged block costs that block, not the rest.
                nxt = self._next_block(offset + 1, size)
                if nxt is None:
                    if damage == "it runs past the end of the file":
                        self._cut_short(offset, size)
                    else:
                        self._stop(offset, size, f"{where} is corrupt ({damage}); stopped there")
                    return
                if nxt == end and count and damage != "it runs past the end of the file":
                    lost = f"skipped it ({count:,} records)"     # its head was intact: one block lost
                else:
                    lost = f"skipped {nxt - offset:,} bytes"
                self.warnings.append(f"{where} is corrupt ({damage}): {lost}, reading on from the next "
                                     f"valid block at byte {nxt:,}")
                self.damaged_skipped += 1
                self.bytes_skipped += nxt - offset
                offset = nxt
                continue
            if kind == BLOCK_TRAILER:
                self._read_trailer(raw, where)
                if end < size:
                    self.warnings.append(f"{size - end:,} bytes after the end trailer were ignored")
                return
            self.blocks_read += 1
            self.records_read += count
            self.offset = end
            pos = 0
            while pos < rlen:
                length = unpack_u32(raw, pos)[0]
                pos += 4
                yield raw[pos:pos + length]
                pos += length
            offset = end

    @staticmethod
    def _framed(raw: bytes, rlen: int, count: int) -> bool:
        """The whole block's framing checks out (before any of it is yielded: all or nothing)."""
        unpack_u32 = _U32.unpack_from
        pos = n = 0
        try:
            while pos < rlen:
                pos += 4 + unpack_u32(raw, pos)[0]
                n += 1
        except struct.error:
            return False
        return pos == rlen and n == count

    def _next_block(self, start: int, size: int) -> int | None:
        """Offset of the first block at or after `start` whose head is plausible and whose checksum
        matches (a false match is a 1-in-2^32 chance per candidate); None when there is none.
        Blocks have no magic of their own, so every 'B'/'T' byte is a candidate. The bytes
        checksummed over a whole read are capped (self._scan_budget): a hostile file cannot make
        the scan quadratic."""
        zlib_ok = self.codec == "zlib"
        pos = start
        while pos + BLOCK_HEAD_SIZE <= size:
            chunk = self._pread(SCAN_CHUNK + BLOCK_HEAD_SIZE - 1, pos)
            limit = min(SCAN_CHUNK, len(chunk) - BLOCK_HEAD_SIZE + 1)
            for match in _BLOCK_TYPE_BYTE.finditer(chunk, 0, max(0, limit)):
                at = match.start()
                kind, slen, rlen, count, crc = _BLOCK_HEAD.unpack_from(chunk, at)
                # the writer never writes an empty block: S > 0, and a data block holds records
                if (not 0 < slen <= rlen <= MAX_BLOCK or (slen < rlen and not zlib_ok)
                        or pos + at + BLOCK_HEAD_SIZE + slen > size
                        or (count == 0) == (kind == BLOCK_DATA) or count > rlen // 4):
                    continue
                self._scan_budget -= slen
                if self._scan_budget < 0:
                    return None
                if zlib.crc32(self._pread(slen, pos + at + BLOCK_HEAD_SIZE)) == crc:
                    return pos + at
            pos += SCAN_CHUNK
        return None

    def _stop(self, offset: int, size: int, what: str) -> None:
        self.warnings.append(f"{what}: {size - offset:,} bytes at the end could not be read")

    def _cut_short(self, offset: int, size: int) -> None:
        self.warnings.append(f"the recording ends inside block {self.blocks_read + 1}, without a trailer (the "
                             f"tracer stopped before closing it): {self.records_read:,} records read, "
                             f"{size - offset:,} bytes at the end could not be read")

    def _decode(self, stored: bytes, rlen: int) -> bytes | None:
        if len(stored) == rlen:
            return stored                 # a block kept as is
        if len(stored) > rlen or self.codec != "zlib":
            return None
        d = zlib.decompressobj()
        try:
            raw = d.decompress(stored, rlen)
        except zlib.error:
            return None
        if len(raw) != rlen or not d.eof or d.unused_data or d.unconsumed_tail:
            return None
        return raw

    def _read_trailer(self, raw: bytes, where: str) -> None:
        try:
            trailer = _loads(raw)
        except (ValueError, RecursionError):
            trailer = None
        if not isinstance(trailer, dict):
            self.warnings.append(f"the end trailer ({where}) is not a JSON object; ignored")
            return
        self.trailer = trailer
        declared = trailer.get("records")
        stopped = trailer.get("stopped")
        if stopped is not None:
            count = declared if type(declared) is int else self.records_read
            reason = _show(stopped[:80]) if isinstance(stopped, str) else _clip(stopped)
            self.warnings.append(f"recording stopped: {reason} after {count:,} records")
        if type(declared) is int and declared != self.records_read:
            lost = (f": {declared - self.records_read:,} lost in the damaged blocks"
                    if self.damaged_skipped and declared > self.records_read else "")
            self.warnings.append(f"the end trailer says {declared:,} records but the file holds "
                                 f"{self.records_read:,}{lost}")

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "TraceReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
