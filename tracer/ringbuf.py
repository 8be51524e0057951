"""Read a BPF ring buffer map straight from its shared memory (no per-record callback).

bcc's `ring_buffer_consume()` calls back into Python through ctypes once per record, and the
callback then copies the record with `ctypes.string_at`: a few microseconds per record, which at
tens of thousands of records a second is most of a CPU. The kernel exposes the ring to user
space as memory instead (what libbpf's `ringbuf_process_ring()` walks), so we walk it here:

    map fd, offset 0, one page, read-write:   consumer_pos (u64) -- we advance it
    map fd, offset PAGE, read-only:           producer_pos (u64) page, then the data area of
                                              `size` bytes mapped twice in a row, so a record that
                                              wraps around the end reads as one contiguous slice

Every record starts with an 8-byte header: u32 len (bit 31 BUSY: reserved, not committed yet;
bit 30 DISCARD: skip it), u32 page offset (kernel use). Records are 8-byte aligned. The
consumer may pass a record only once its BUSY bit is clear; records behind a busy one wait for
the next drain even if committed (ring order is kept, as libbpf does).

Memory ordering: the kernel commits a record (clears BUSY) with a full barrier after writing its
bytes, and we read producer_pos, then the header, then the bytes. On x86 (TSO) loads are not
reordered with older loads, so plain loads suffice -- which is all Python can do. On weakly
ordered CPUs (arm64...) that is not guaranteed, so `open_reader()` declines there unless
REDIS_TRACER_RINGBUF_MMAP=1, and the caller falls back to bcc's callback.
"""
from __future__ import annotations

import mmap
import os
import platform
import struct

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
LEN_MASK = DISCARD_BIT - 1
HDR_SIZE = 8

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_u64_at = _U64.unpack_from
_u32_at = _U32.unpack_from
_store_u64 = _U64.pack_into

ENV = "REDIS_TRACER_RINGBUF_MMAP"   # "0": never mmap (use bcc's callback); "1": mmap on any CPU
STRONGLY_ORDERED = ("x86_64", "amd64", "i386", "i486", "i586", "i686")


class RingBufReader:
    """Consume records from a BPF ring buffer's mapped pages.

    `consumer` must be a writable buffer holding consumer_pos at offset 0; `producer` a buffer
    holding producer_pos at offset 0 and the data area (mapped twice) from `data_offset` on.
    Use `RingBufReader.open(map_fd, size)` for a real map; tests pass fake buffers.
    """

    __slots__ = ("_cons", "_prod", "_data_off", "size", "mask", "_maps", "records", "bytes",
                 "discarded", "drains", "_stored", "moved")

    def __init__(self, consumer, producer, size: int, data_offset: int):
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        self._cons = consumer
        self._prod = producer
        self._data_off = data_offset
        self.size = size
        self.mask = size - 1
        self._maps = ()
        self.records = 0      # records handed out
        self.bytes = 0        # ring bytes consumed (headers and padding included)
        self.discarded = 0    # records the producer discarded
        self.drains = 0
        self._stored = None   # the consumer position we last wrote
        self.moved = 0        # drains that found it changed by someone else (must stay 0)

    @classmethod
    def open(cls, map_fd: int, size: int, page_size: int | None = None) -> "RingBufReader":
        """Map a BPF_MAP_TYPE_RINGBUF of `size` data bytes; OSError/ValueError when it cannot."""
        if map_fd < 0:
            raise ValueError(f"bad map fd {map_fd}")
        page = page_size or mmap.PAGESIZE
        cons = mmap.mmap(map_fd, page, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE,
                         offset=0)
        try:
            prod = mmap.mmap(map_fd, page + 2 * size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ,
                             offset=page)
        except BaseException:
            cons.close()
            raise
        reader = cls(cons, prod, size, page)
        reader._maps = (cons, prod)
        return reader

    def close(self) -> None:
        for m in self._maps:
            try:
                m.close()
            except (BufferError, ValueError):
                pass
        self._maps = ()

    # -- positions ----------------------------------------------------------------------------
    @property
    def consumer_pos(self) -> int:
        return _u64_at(self._cons, 0)[0]

    @property
    def producer_pos(self) -> int:
        return _u64_at(self._prod, 0)[0]

    def pending_bytes(self) -> int:
        """Bytes the producer has reserved that we have not consumed (committed or not)."""
        return max(0, self.producer_pos - self.consumer_pos)

    # -- draining -----------------------------------------------------------------------------
    def drain(self, out: list, max_records: int = 1 << 62) -> int:
        """Append every committed record (as bytes, header stripped) to `out`, in ring order, and
        release their space to the producer. Stops at the first record still being written, or
        after max_records. Returns the number of records appended."""
        cons_buf, prod = self._cons, self._prod
        base, mask = self._data_off, self.mask
        append = out.append
        start = pos = _u64_at(cons_buf, 0)[0]
        if self._stored is not None and start != self._stored:
            self.moved += 1
        got = discarded = 0
        while got < max_records:
            end = _u64_at(prod, 0)[0]
            if pos >= end:
                break
            stop = False
            batch_from = pos
            while pos < end:
                off = base + (pos & mask)
                hdr = _u32_at(prod, off)[0]
                if hdr & BUSY_BIT:
                    stop = True
                    break
                n = hdr & LEN_MASK
                if hdr & DISCARD_BIT:
                    discarded += 1
                else:
                    off += HDR_SIZE
                    append(prod[off:off + n])
                    got += 1
                pos += (n + HDR_SIZE + 7) & ~7
                if got >= max_records:
                    break
            if pos != batch_from:
                # release the space: the producer may reuse it from now on
                _store_u64(cons_buf, 0, pos)
                self._stored = pos
            if stop:
                break
        self.records += got
        self.discarded += discarded
        self.bytes += pos - start
        self.drains += 1
        return got


def mmap_wanted() -> bool:
    """Whether open_reader() should try the mapped reader on this machine."""
    env = os.environ.get(ENV, "")
    if env == "0":
        return False
    if env == "1":
        return True
    return platform.machine().lower() in STRONGLY_ORDERED


def open_reader(map_fd: int, size: int):
    """(reader, None) or (None, why not) -- the caller keeps bcc's callback in the second case."""
    if not mmap_wanted():
        return None, f"{platform.machine()} is not strongly ordered (set {ENV}=1 to force)"
    try:
        return RingBufReader.open(map_fd, size), None
    except (OSError, ValueError, OverflowError) as err:
        return None, f"mmap of the ring buffer failed: {err}"
