"""ProbeSession.drain() on a fake ring and fake maps (no root): the mapped reader feeds it, and an
unknown fd is classified from /proc once per batch, not once per record."""
from __future__ import annotations

import ctypes

from tracer import events
from tracer.bpf_session import ProbeSession
from tracer.target import Target

from test_ringbuf import FakeRing

PID = 4242


class FakeFdKinds(dict):
    @staticmethod
    def Key(tgid, fd):      # noqa: N802 (bcc's spelling)
        return (tgid, fd)

    def __setitem__(self, key, value):
        super().__setitem__(key, int(value.value))


class FakeMap(dict):
    def __setitem__(self, key, value):
        super().__setitem__(int(key.value), int(value.value))


class FakeBPF:
    def __init__(self):
        self.maps = {"fd_kinds": FakeFdKinds(), "lost_fds": {}}

    def __getitem__(self, name):
        return self.maps[name]


class CountingClassifier:
    """FdClassifier's interface: every fd is `link` (None: closed) and of kind `kind`."""

    proc = "/nonexistent"

    def __init__(self, kind=events.FD_CLIENT, link="socket:[100]"):
        self.kind = kind
        self.fd_link = link
        self.calls = []
        self.forgotten = []
        self.seen = {}

    def link(self, tgid, fd):
        return self.fd_link

    def reported(self, tgid, fd, link):
        return self.seen.get((tgid, fd)) == link

    def classify(self, tgid, fd, link, sockets):
        self.calls.append((tgid, fd))
        self.seen[(tgid, fd)] = link
        if self.kind == events.FD_IGNORE:
            return self.kind, None
        info = events.Event(kind=events.FDINFO, tgid=tgid, tid=tgid, fd=fd, ret=self.kind, payload=b"in:6379")
        return self.kind, info

    def forget(self, tgid, fd):
        self.forgotten.append((tgid, fd))
        self.seen.pop((tgid, fd), None)


def _session(kind=events.FD_CLIENT, size=1 << 20, link="socket:[100]"):
    ring = FakeRing(size=size)
    ring.rescue = FakeRing(size=4096)   # the kernel side of the rescue ring, for tests that fill it
    s = ProbeSession([Target(pid=PID, exe="/usr/bin/redis-server", listen_ports=[6379], port=6379)])
    s.bpf = FakeBPF()
    s.ring = ring.reader()
    s.rescue = ring.rescue.reader()
    s.classifier = CountingClassifier(kind, link)
    return s, ring


def _rec(kind, fd, flags=0, payload=b"", ts=1000):
    return events.encode(events.Event(kind=kind, ts_enter=ts, ts_exit=ts + 1, tgid=PID, tid=PID, fd=fd,
                                      flags=flags, ret=len(payload), payload=payload))


def test_unknown_fd_classified_once_per_batch():
    s, ring = _session()
    for i in range(500):
        ring.reserve(_rec(events.READ, 9, events.RTF_UNKNOWN_FD, b"*1\r\n$4\r\nPING\r\n", ts=1000 + i))
    out = s.drain()
    assert s.classifier.calls == [(PID, 9)]
    assert len(out) == 501                        # one FDINFO first, then every record
    assert events.decode(out[0]).kind == events.FDINFO
    assert all(events.decode(r).kind == events.READ for r in out[1:])
    assert s.bpf["fd_kinds"][(PID, 9)] == events.FD_CLIENT


def test_ignored_fds_drop_their_records():
    s, ring = _session(kind=events.FD_IGNORE)
    for _ in range(50):
        ring.reserve(_rec(events.READ, 12, events.RTF_UNKNOWN_FD, b"x"))
    assert s.drain() == [] and len(s.classifier.calls) == 1
    assert s.bpf["fd_kinds"][(PID, 12)] == events.FD_IGNORE


def test_record_of_a_closed_fd_is_dropped_and_leaves_no_mark():
    # A mark written for a closed number would hide its next holder (say, a connection Redis
    # makes to its master) from the probes.
    s, ring = _session(link=None)
    ring.reserve(_rec(events.READ, 8, events.RTF_UNKNOWN_FD, b"12735 (redis-server) S 1"))
    assert s.drain() == [] and s.classifier.calls == []
    assert (PID, 8) not in s.bpf["fd_kinds"] and s.dropped_unknown == 1


def test_record_older_than_the_kernels_mark_is_dropped():
    # Redis read a file on fd 7 (unmarked), closed it, and accept() reused 7 and marked it before
    # user space saw the read: the record is the file's, not the new client's.
    s, ring = _session()
    s.bpf["fd_kinds"][(PID, 7)] = ctypes.c_uint8(events.FD_CLIENT)
    ring.reserve(_rec(events.READ, 7, events.RTF_UNKNOWN_FD, b"12735 (redis-server) S 1"))
    assert s.drain() == [] and s.classifier.calls == []
    assert s.bpf["fd_kinds"][(PID, 7)] == events.FD_CLIENT      # the kernel's mark is left alone
    # a record of a holder classified here earlier (in an earlier batch) is kept
    s, ring = _session()
    s.classifier.seen[(PID, 7)] = "socket:[100]"
    s.bpf["fd_kinds"][(PID, 7)] = ctypes.c_uint8(events.FD_CLIENT)
    ring.reserve(_rec(events.READ, 7, events.RTF_UNKNOWN_FD, b"*1\r\n$4\r\nPING\r\n"))
    assert [events.decode(r).kind for r in s.drain()] == [events.FDINFO, events.READ]


def test_file_writes_are_classified_despite_the_kernels_mark():
    # probes/fds.c marks files the target opens FD_FILE; their writes come up for user space to
    # tell the AOF (kept, marked FD_AOF from now on) from other files (dropped, FD_IGNORE)
    for kind, kept in ((events.FD_AOF, 2), (events.FD_IGNORE, 0)):
        s, ring = _session(kind=kind, link="/data/appendonlydir/appendonly.aof.1.incr.aof")
        s.bpf["fd_kinds"][(PID, 9)] = ctypes.c_uint8(events.FD_FILE)
        ring.reserve(_rec(events.WRITE, 9, events.RTF_UNKNOWN_FD | events.RTF_FILE_FD))
        assert len(s.drain()) == kept
        assert s.bpf["fd_kinds"][(PID, 9)] == kind


def test_close_resets_the_decision():
    s, ring = _session()
    ring.reserve(_rec(events.READ, 9, events.RTF_UNKNOWN_FD, b"a"))
    ring.reserve(_rec(events.CLOSE, 9))
    ring.reserve(_rec(events.READ, 9, events.RTF_UNKNOWN_FD, b"b"))
    out = [events.decode(r) for r in s.drain()]
    # after the CLOSE the fd is undecided again: "b" goes through the checks (not the batch's
    # decision for the old file) and is dropped, the fd number being marked while not ours
    assert [(e.kind, e.payload) for e in out] == [(events.FDINFO, b"in:6379"), (events.READ, b"a"),
                                                  (events.CLOSE, b"")]
    assert s.classifier.forgotten == [(PID, 9)]


def test_drain_caps_the_batch_and_reports_backlog():
    s, ring = _session()
    for i in range(10):
        ring.reserve(_rec(events.WRITE, 5, 0, b"+OK\r\n", ts=i))
    mark = s.ring_mark()
    assert len(s.drain(max_records=4)) == 4 and s.backlog and not s.ring_passed(mark)
    assert len(s.drain(max_records=4)) == 4 and s.backlog
    assert len(s.drain(max_records=4)) == 2 and not s.backlog and s.ring_passed(mark)


def _attach_maps_session(tmp_path, nfds):
    from test_fdinfo import PID as FAKE_PID, fake_proc

    from tracer.fdinfo import FdClassifier

    proc = fake_proc(tmp_path, {10 + i: "/dev/null" for i in range(nfds)}, [])
    s = ProbeSession([Target(pid=FAKE_PID, exe="/usr/bin/redis-server", listen_ports=[6379], port=6379)])
    s.bpf = FakeBPF()
    s.bpf.maps.update(targets=FakeMap(), listen_ports=FakeMap())
    s.classifier = FdClassifier(proc=proc, listen_ports={FAKE_PID: {6379}})
    return s


def test_slow_fd_discovery_reports_progress(tmp_path, monkeypatch):
    from tracer import bpf_session, fdinfo

    s = _attach_maps_session(tmp_path, 2 * fdinfo.SCAN_TICK_FDS + 10)
    messages = []
    s._fill_maps(progress=messages.append)          # fast: silent
    assert messages == [] and s.times.fds == 2 * fdinfo.SCAN_TICK_FDS + 10
    assert len(s.bpf["fd_kinds"]) == s.times.fds and set(s.bpf["fd_kinds"].values()) == {events.FD_IGNORE}
    monkeypatch.setattr(bpf_session, "PROGRESS_AFTER_S", 0.0)   # as if each fd took long
    s = _attach_maps_session(tmp_path / "again", 2 * fdinfo.SCAN_TICK_FDS + 10)
    s._fill_maps(progress=messages.append)
    total = 2 * fdinfo.SCAN_TICK_FDS + 10
    assert [m.split(" fds")[0] for m in messages] == [f"attaching: {fdinfo.SCAN_TICK_FDS}/{total}",
                                                       f"attaching: {2 * fdinfo.SCAN_TICK_FDS}/{total}"]


def test_rescued_records_join_the_batch_in_time_order():
    # events refused the records of ts 20 and 40 (its lock failed): the rescue ring took them
    s, ring = _session()
    for ts, body in ((10, b"+1"), (30, b"+3"), (50, b"+5")):
        ring.reserve(_rec(events.WRITE, 5, 0, body, ts=ts))
    for ts, body in ((20, b"+2"), (40, b"+4")):
        ring.rescue.reserve(_rec(events.WRITE, 5, 0, body, ts=ts))
    assert [events.decode(r).payload for r in s.drain()] == [b"+1", b"+2", b"+3", b"+4", b"+5"]
    ring.rescue.reserve(_rec(events.WRITE, 5, 0, b"+6", ts=60))
    assert [events.decode(r).payload for r in s.drain()] == [b"+6"]    # alone: still drained
    assert s.drain() == []


def test_a_rescued_record_waits_while_events_still_holds_older_records():
    # the drain of events stops at max_records: a rescued reply newer than the last record drained
    # from events must not overtake that ring's older records (its request's read among them), or
    # the stitcher sees the reply before the request and leaves the request unanswered
    s, ring = _session()
    for ts, body in ((10, b"+1"), (20, b"+2"), (30, b"+3"), (50, b"+5")):
        ring.reserve(_rec(events.WRITE, 5, 0, body, ts=ts))
    ring.rescue.reserve(_rec(events.WRITE, 5, 0, b"+4", ts=40))
    assert [events.decode(r).payload for r in s.drain(max_records=2)] == [b"+1", b"+2"] and s.backlog
    assert [events.decode(r).payload for r in s.drain(max_records=2)] == [b"+3", b"+4", b"+5"]
    assert s.drain() == []


class LostKey:
    def __init__(self, tgid, fd):
        self.tgid, self.fd = tgid, fd


class LostSpan:
    def __init__(self, first_ts, last_ts, records):
        self.first_ts, self.last_ts, self.records = first_ts, last_ts, records


def test_a_loss_the_kernel_noted_becomes_a_lost_record_where_it_happened():
    # the records of fd 5 ending at 20 and 25 reached neither ring: the kernel noted the span
    s, ring = _session()
    for ts, body in ((10, b"+1"), (30, b"+3")):
        ring.reserve(_rec(events.WRITE, 5, 0, body, ts=ts))
    s.bpf["lost_fds"][LostKey(PID, 5)] = LostSpan(21, 26, 2)
    out = [events.decode(r) for r in s.drain()]
    assert [(e.kind, e.fd, e.ret) for e in out] == [(events.WRITE, 5, 2), (events.LOST, 5, 2), (events.WRITE, 5, 2)]
    assert (out[1].tgid, out[1].ts_enter, out[1].ts_exit) == (PID, 21, 26)
    assert s.bpf["lost_fds"] == {}                  # read once: cleared for the next span
    assert s.drain() == []
