"""The mmap ring-buffer reader against a fake ring laid out as the kernel maps it (no root needed)."""
from __future__ import annotations

import mmap
import os
import random
import struct

import pytest

from tracer import ringbuf
from tracer.ringbuf import BUSY_BIT, DISCARD_BIT, RingBufReader

PAGE = 4096


class FakeRing:
    """Kernel side of a BPF ring buffer: a consumer page, and a producer page followed by the data
    area mapped twice (here: every byte written to both copies)."""

    def __init__(self, size: int = 256):
        self.size = size
        # anonymous mappings, like the real ones: slices are bytes
        self.cons = mmap.mmap(-1, PAGE)
        self.prod = mmap.mmap(-1, PAGE + 2 * size)
        self.pos = 0                     # producer_pos
        self.headers: list[int] = []     # ring position of each reserved record

    def _put(self, pos: int, data: bytes) -> None:
        for i, b in enumerate(data):
            o = (pos + i) % self.size
            self.prod[PAGE + o] = b
            self.prod[PAGE + self.size + o] = b

    def free(self) -> int:
        return self.size - (self.pos - struct.unpack_from("<Q", self.cons, 0)[0])

    def reserve(self, payload: bytes, busy: bool = False, discard: bool = False) -> bool:
        need = (len(payload) + 8 + 7) & ~7
        if need > self.free():
            return False
        hdr = len(payload) | (BUSY_BIT if busy else 0) | (DISCARD_BIT if discard else 0)
        self._put(self.pos, struct.pack("<II", hdr, 0) + payload)
        self.headers.append(self.pos)
        self.pos += need
        struct.pack_into("<Q", self.prod, 0, self.pos)
        return True

    def commit(self, index: int, discard: bool = False) -> None:
        pos = self.headers[index]
        o = pos % self.size
        hdr = struct.unpack_from("<I", self.prod, PAGE + o)[0] & ~BUSY_BIT
        if discard:
            hdr |= DISCARD_BIT
        self._put(pos, struct.pack("<I", hdr))

    def reader(self) -> RingBufReader:
        return RingBufReader(self.cons, self.prod, self.size, PAGE)

    @property
    def consumer_pos(self) -> int:
        return struct.unpack_from("<Q", self.cons, 0)[0]


def test_records_in_order_and_space_released():
    ring = FakeRing()
    r = ring.reader()
    assert ring.reserve(b"hello") and ring.reserve(b"") and ring.reserve(b"x" * 16)
    out: list = []
    assert r.drain(out) == 3
    assert out == [b"hello", b"", b"x" * 16]
    assert all(type(x) is bytes for x in out)
    # 5 -> 16, 0 -> 8, 16 -> 24 ring bytes: headers plus 8-byte alignment
    assert ring.consumer_pos == ring.pos == 48
    assert r.drain(out) == 0 and len(out) == 3


def test_a_consumer_position_moved_by_someone_else_is_counted():
    ring = FakeRing()
    r = ring.reader()
    ring.reserve(b"a")
    r.drain([])
    assert r.moved == 0 and r.drain([]) == 0 and r.moved == 0     # ours, unchanged: fine
    struct.pack_into("<Q", ring.cons, 0, 0)                        # moved back behind our back
    ring.reserve(b"b")
    r.drain([])
    assert r.moved == 1


def test_wraparound_record_reads_contiguously():
    ring = FakeRing(size=64)
    r = ring.reader()
    out: list = []
    assert ring.reserve(b"a" * 40)        # 48 ring bytes
    assert r.drain(out) == 1
    payload = bytes(range(30))            # 40 ring bytes from position 48: wraps at 64
    assert ring.reserve(payload)
    assert r.drain(out) == 1
    assert out[-1] == payload
    assert ring.consumer_pos == 88


def test_busy_record_blocks_the_ones_behind_it():
    ring = FakeRing()
    r = ring.reader()
    ring.reserve(b"one")
    ring.reserve(b"two", busy=True)
    ring.reserve(b"three")                # committed, but behind a busy one
    out: list = []
    assert r.drain(out) == 1 and out == [b"one"]
    assert ring.consumer_pos == 16        # stopped at the busy header, which stays unconsumed
    assert r.drain(out) == 0
    ring.commit(1)
    assert r.drain(out) == 2 and out == [b"one", b"two", b"three"]
    assert ring.consumer_pos == ring.pos


def test_discarded_records_are_skipped_but_consumed():
    ring = FakeRing()
    r = ring.reader()
    ring.reserve(b"keep")
    ring.reserve(b"drop me", discard=True)
    ring.reserve(b"late", busy=True)
    ring.commit(2, discard=True)          # bpf_ringbuf_discard() after a reserve
    ring.reserve(b"also kept")
    out: list = []
    assert r.drain(out) == 2 and out == [b"keep", b"also kept"]
    assert r.discarded == 2
    assert ring.consumer_pos == ring.pos


def test_max_records_leaves_the_rest_for_the_next_drain():
    ring = FakeRing()
    r = ring.reader()
    for i in range(5):
        ring.reserve(b"r%d" % i)
    out: list = []
    assert r.drain(out, max_records=2) == 2
    assert ring.consumer_pos == 32            # two 16-byte slots
    assert r.drain(out) == 3
    assert out == [b"r%d" % i for i in range(5)]


def test_random_stream_with_wraps_busy_and_discards():
    rng = random.Random(7)
    ring = FakeRing(size=512)
    r = ring.reader()
    expected, got = [], []
    busy: list[int] = []
    seq = 0
    for _ in range(3000):
        action = rng.random()
        if action < 0.6:
            payload = bytes([seq % 251]) * rng.randrange(0, 60)
            seq += 1
            make_busy = rng.random() < 0.2
            discard = not make_busy and rng.random() < 0.1
            if ring.reserve(payload, busy=make_busy, discard=discard):
                idx = len(ring.headers) - 1
                if make_busy:
                    busy.append(idx)
                    expected.append((idx, payload))
                elif not discard:
                    expected.append((idx, payload))
        elif action < 0.8 and busy:
            idx = busy.pop(rng.randrange(len(busy)))
            if rng.random() < 0.2:
                ring.commit(idx, discard=True)
                expected = [(i, p) for i, p in expected if i != idx]
            else:
                ring.commit(idx)
        else:
            r.drain(got)
    for idx in busy:
        ring.commit(idx)
    r.drain(got)
    assert got == [p for _, p in expected]
    assert ring.consumer_pos == ring.pos


def test_rejects_bad_size():
    with pytest.raises(ValueError):
        RingBufReader(bytearray(8), bytearray(PAGE + 200), 100, PAGE)


def test_open_reader_declines_when_disabled(monkeypatch):
    monkeypatch.setenv(ringbuf.ENV, "0")
    reader, why = ringbuf.open_reader(-1, 4096)
    assert reader is None and why


def test_open_reader_reports_mmap_failure(monkeypatch):
    monkeypatch.setenv(ringbuf.ENV, "1")
    fd = os.open("/dev/null", os.O_RDWR)     # not a map fd: mmap fails (ENODEV)
    try:
        reader, why = ringbuf.open_reader(fd, 4096)
    finally:
        os.close(fd)
    assert reader is None and "mmap" in why
