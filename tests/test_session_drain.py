"""ProbeSession.drain() on a fake ring and fake maps (no root): the mapped reader feeds it, and an
unknown fd is classified from /proc once per batch, not once per record."""
from __future__ import annotations

from tracer import events
from tracer.bpf_session import ProbeSession
from tracer.fdinfo import STALE
from tracer.target import Target

from test_ringbuf import FakeRing

PID = 4242


class FakeFdKinds(dict):
    @staticmethod
    def Key(tgid, fd):      # noqa: N802 (bcc's spelling)
        return (tgid, fd)

    def __setitem__(self, key, value):
        super().__setitem__(key, int(value.value))


class FakeBPF:
    def __init__(self):
        self.maps = {"fd_kinds": FakeFdKinds(), "lost_fds": {}}

    def __getitem__(self, name):
        return self.maps[name]


class CountingClassifier:
    def __init__(self, kind=events.FD_CLIENT):
        self.kind = kind
        self.calls = []
        self.forgotten = []

    def classify(self, tgid, fd):
        self.calls.append((tgid, fd))
        if self.kind in (STALE, events.FD_IGNORE):
            return self.kind, None
        info = events.Event(kind=events.FDINFO, tgid=tgid, tid=tgid, fd=fd, ret=self.kind, payload=b"in:6379")
        return self.kind, info

    def forget(self, tgid, fd):
        self.forgotten.append((tgid, fd))


def _session(kind=events.FD_CLIENT, size=1 << 20):
    ring = FakeRing(size=size)
    ring.rescue = FakeRing(size=4096)   # the kernel side of the rescue ring, for tests that fill it
    s = ProbeSession([Target(pid=PID, exe="/usr/bin/redis-server", listen_ports=[6379], port=6379)])
    s.bpf = FakeBPF()
    s.ring = ring.reader()
    s.rescue = ring.rescue.reader()
    s.classifier = CountingClassifier(kind)
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


def test_ignored_and_stale_fds_drop_their_records():
    s, ring = _session(kind=events.FD_IGNORE)
    for _ in range(50):
        ring.reserve(_rec(events.READ, 12, events.RTF_UNKNOWN_FD, b"x"))
    assert s.drain() == [] and len(s.classifier.calls) == 1
    s, ring = _session(kind=STALE)
    for _ in range(50):
        ring.reserve(_rec(events.READ, 7, events.RTF_UNKNOWN_FD, b"x"))
    assert s.drain() == [] and len(s.classifier.calls) == 1
    assert (PID, 7) not in s.bpf["fd_kinds"]      # the kernel's mark is left alone


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
