"""Classify a target's file descriptors from /proc: client sockets, the AOF file, everything else.

The probes only follow fds the kernel map marks as client or AOF. Connections accepted while
tracing are marked by the accept probe; everything else (connections older than the tracer,
a new AOF file after a rewrite) is classified here the first time the probes report it.
"""
from __future__ import annotations

import os

from tracer.kernel import events

_TCP_LISTEN = "0A"
STALE = -1  # classify(): the record is older than the fd now behind its number


def _parse_addr(hex_addr: str) -> tuple[int, bytes, int]:
    """/proc/net/tcp{,6} "0100007F:1A85" -> (family, 16-byte address as the probe stores it, port)."""
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return events.AF_INET, raw[::-1].ljust(16, b"\0"), int(port, 16)
    # IPv6: four 32-bit words, each in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return events.AF_INET6, words, int(port, 16)


def tcp_sockets(pid: int, proc: str = "/proc") -> dict[int, tuple[str, int, bytes, int, int]]:
    """inode -> (state, family, peer address, peer port, local port) for the process's network namespace."""
    result = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/{pid}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10:
                continue
            _, _, local_port = _parse_addr(cols[1])
            family, addr, port = _parse_addr(cols[2])
            result[int(cols[9])] = (cols[3], family, addr, port, local_port)
    return result


class FdClassifier:
    """Decides what an fd of the target is; caches by the fd's link so each fd is reported once."""

    def __init__(self, proc: str = "/proc", aof_names: tuple[str, ...] = ("appendonly", ".aof"),
                 listen_ports: dict[int, set] | None = None):
        self.proc = proc
        self.aof_names = aof_names
        self.listen_ports = listen_ports or {}  # tgid -> its listening ports
        self._seen: dict[tuple[int, int], str] = {}

    def forget(self, tgid: int, fd: int) -> None:
        self._seen.pop((tgid, fd), None)

    def classify(self, tgid: int, fd: int, at_attach: bool = False) -> tuple[int, events.Event | None]:
        """(fd kind, FDINFO event to insert in the stream or None when already reported).

        After attach, an fd that is now a connection accepted on the target's own port cannot be
        the fd an "unknown" record was made for: accept() marks those in the kernel as they happen.
        The record was made for an earlier, short-lived file with the same number (Redis reads
        /proc/self/stat): STALE says to drop it and leave the kernel's mark alone."""
        try:
            link = os.readlink(f"{self.proc}/{tgid}/fd/{fd}")
        except OSError:
            return events.FD_IGNORE, None  # already closed: nothing left to follow
        if not at_attach and link.startswith("socket:["):
            sock = tcp_sockets(tgid, self.proc).get(int(link[8:-1]))
            if sock is not None and sock[0] != _TCP_LISTEN and sock[4] in self.listen_ports.get(tgid, ()):
                return STALE, None
        if self._seen.get((tgid, fd)) == link:
            return self._kind_of(tgid, link)[0], None
        kind, info = self._kind_of(tgid, link)
        self._seen[(tgid, fd)] = link
        if info is None:
            return kind, None
        info.tgid = tgid
        info.tid = tgid
        info.fd = fd
        return kind, info

    def _kind_of(self, tgid: int, link: str) -> tuple[int, events.Event | None]:
        if link.startswith("socket:["):
            inode = int(link[8:-1])
            sock = tcp_sockets(tgid, self.proc).get(inode)
            if sock is None:
                # unix socket (or one that is gone): follow it as a client without a peer address.
                return events.FD_CLIENT, events.Event(kind=events.FDINFO, ret=events.FD_CLIENT, payload=b"unix")
            state, family, addr, port, local_port = sock
            if state == _TCP_LISTEN:
                return events.FD_IGNORE, None
            # "in": accepted on the target's own port; "out": Redis connected out (master link,
            # cluster bus, MIGRATE); the stitcher decides what it is from the traffic.
            direction = "in" if local_port in self.listen_ports.get(tgid, ()) else "out"
            return events.FD_CLIENT, events.Event(kind=events.FDINFO, ret=events.FD_CLIENT, family=family,
                                                  peer_addr=addr, peer_port=port,
                                                  payload=f"{direction}:{local_port}".encode())
        base = os.path.basename(link)
        if any(name in base for name in self.aof_names):
            return events.FD_AOF, events.Event(kind=events.FDINFO, ret=events.FD_AOF,
                                               payload=link.encode()[-200:])
        return events.FD_IGNORE, None

    def scan(self, tgid: int) -> list[tuple[int, int, events.Event | None]]:
        """(fd, kind, FDINFO) for every fd the process holds now."""
        try:
            names = os.listdir(f"{self.proc}/{tgid}/fd")
        except OSError:
            return []
        out = []
        for name in sorted(names, key=int):
            kind, info = self.classify(tgid, int(name), at_attach=True)
            out.append((int(name), kind, info))
        return out
