"""Build synthetic probe event streams, exactly as the probes would emit them, for root-free tests."""
from __future__ import annotations

from tracer.kernel import events

PID = 1000


class Stream:
    def __init__(self, pid: int = PID, capture: int = 4096):
        self.pid = pid
        self.capture = capture
        self.t = 1_000_000_000
        self.out: list[events.Event] = []
        self.last_wake = 0

    def at(self, t_us: float) -> "Stream":
        self.t = 1_000_000_000 + int(t_us * 1000)
        return self

    def _ev(self, kind, fd, dur_us=5, tid=None, **kw) -> events.Event:
        start = self.t
        self.t += int(dur_us * 1000)
        ev = events.Event(ts_enter=start, ts_exit=self.t, tgid=self.pid, tid=tid or self.pid, fd=fd, kind=kind, **kw)
        self.out.append(ev)
        self.t += 1000
        return ev

    def accept(self, fd, port, established_us_before=20):
        fam, addr = events.peer_bytes("127.0.0.1")
        return self._ev(events.ACCEPT, fd, ret=fd, family=fam, peer_addr=addr, peer_port=port,
                        aux_ts=self.t - established_us_before * 1000, flags=events.RTF_ACCEPT4)

    def wake(self):
        self.last_wake = self.t
        self.t += 1000

    def read(self, fd, data: bytes, arrival_us_before=None, tid=None, dur_us=5, total=None):
        arrival = self.t - int(arrival_us_before * 1000) if arrival_us_before is not None else 0
        total = len(data) if total is None else total
        return self._ev(events.READ, fd, dur_us, tid=tid, ret=total, aux_ts=arrival, aux_ts2=self.last_wake,
                        payload=data[: self.capture], cap_len=min(len(data), self.capture))

    def write(self, fd, data: bytes, tid=None, dur_us=5, total=None, flags=0):
        total = len(data) if total is None else total
        return self._ev(events.WRITE, fd, dur_us, tid=tid, ret=total, payload=data[: self.capture],
                        cap_len=min(len(data), self.capture), flags=flags)

    def close(self, fd, kind=events.FD_CLIENT):
        return self._ev(events.CLOSE, fd, 0, ret=kind)

    def fsync(self, fd, dur_us, tid=None, fdatasync=True):
        return self._ev(events.FSYNC, fd, dur_us, tid=tid, flags=events.RTF_FDATASYNC if fdatasync else 0)

    def loop(self, start_us, end_us):
        ev = events.Event(kind=events.LOOP, tgid=self.pid, tid=self.pid, fd=-1,
                          aux_ts=1_000_000_000 + int(start_us * 1000), ts_enter=1_000_000_000 + int(end_us * 1000),
                          ts_exit=1_000_000_000 + int(end_us * 1000))
        self.out.append(ev)
        return ev

    def exec_(self, dur_us):
        return self._ev(events.EXEC, -1, dur_us)

    def aof_fd(self, fd):
        ev = events.Event(kind=events.FDINFO, tgid=self.pid, tid=self.pid, fd=fd, ret=events.FD_AOF,
                          ts_enter=self.t, ts_exit=self.t, payload=b"/data/appendonly.aof")
        self.out.append(ev)
        return ev

    def raw(self) -> list[bytes]:
        return [events.encode(e) for e in self.out]


def cmd(*args) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)
