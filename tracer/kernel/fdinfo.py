"""Classify a target's file descriptors from /proc: client sockets, the AOF file, everything else.

The probes only follow fds the kernel map marks as client or AOF. Connections accepted while
tracing are marked by the accept probe, files and pipes the target opens by probes/fds.c;
everything else (connections older than the tracer, sockets Redis connected itself) is classified
here: all at once before the probes attach (`scan`), or the first time the probes report the fd.

Reading /proc/<pid>/net/{tcp,tcp6,unix} costs time in proportion to every socket in the network
namespace, so it is read once per namespace per scan or drain batch (`SocketTables`), never once per
fd: once per fd made attaching to a Redis with N connections cost O(N²) (minutes at a few thousand).
Each target's tables are its own namespace's (a container's redis-server has its own ports).
"""
from __future__ import annotations

import os
import socket
from typing import Callable, NamedTuple

from tracer.kernel import events
from tracer.kernel.netns import netns_of
from tracer.kernel.target import socket_inodes
from tracer.kernel.unixpeer import describe_peer, peer_inode, peer_pid

_TCP_LISTEN = "0A"
_UNIX_STREAM = "0001"     # /proc/net/unix Type column
_UNIX_CONNECTED = "03"    # /proc/net/unix St column: SS_CONNECTED
SCAN_TICK_FDS = 512       # scan(): the progress callback is called this often


class TcpSocket(NamedTuple):
    state: str            # /proc/net/tcp "st" column, "0A" = LISTEN
    family: int
    peer_addr: bytes      # 16 bytes, as the probe stores it
    peer_port: int
    local_port: int


def _parse_addr(hex_addr: str) -> tuple[int, bytes, int]:
    """/proc/net/tcp{,6} "0100007F:1A85" -> (family, 16-byte address as the probe stores it, port)."""
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return events.AF_INET, raw[::-1].ljust(16, b"\0"), int(port, 16)
    # IPv6: four 32-bit words, each in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return events.AF_INET6, words, int(port, 16)


def _table_lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()[1:]
    except OSError:
        return []


def tcp_sockets(pid: int, proc: str = "/proc") -> dict[int, TcpSocket]:
    """inode -> TcpSocket for every TCP socket of the process's network namespace."""
    result = {}
    for name in ("tcp", "tcp6"):
        for line in _table_lines(f"{proc}/{pid}/net/{name}"):
            cols = line.split()
            if len(cols) < 10:
                continue
            local_port = int(cols[1].rsplit(":", 1)[1], 16)
            family, addr, port = _parse_addr(cols[2])
            result[int(cols[9])] = TcpSocket(cols[3], family, addr, port, local_port)
    return result


def unix_stream_connections(pid: int, proc: str = "/proc") -> set[int]:
    """Inodes of the connected unix stream sockets of the process's network namespace (unix clients)."""
    result = set()
    for line in _table_lines(f"{proc}/{pid}/net/unix"):
        cols = line.split()
        if len(cols) >= 7 and cols[4] == _UNIX_STREAM and cols[5] == _UNIX_CONNECTED:
            result.add(int(cols[6]))
    return result


def server_fd_of(pid: int, sock: socket.socket, proc: str = "/proc") -> int | None:
    """The fd of the target's end of a connection the tracer made (`sock`, connected), None when
    not found: by our end's peer inode for a unix socket, by our port in the target's TCP table."""
    fds = socket_inodes(pid, proc)
    if sock.family == socket.AF_UNIX:
        peer = peer_inode(os.fstat(sock.fileno()).st_ino)
        return fds.get(peer) if peer else None
    client_port = sock.getsockname()[1]
    for inode, s in tcp_sockets(pid, proc).items():
        if s.peer_port == client_port and s.state != _TCP_LISTEN and inode in fds:
            return fds[inode]
    return None


def unix_client_name(tgid: int, fd: int, proc: str = "/proc") -> str:
    """"unix:<pid>(<comm>)" of the process at the other end of the target's unix connection `fd`."""
    return describe_peer(peer_pid(tgid, fd), proc)


class SocketTables:
    """The socket tables a target's fds are looked up in, each namespace's read at most once per
    instance (targets in one namespace share them). Make one per scan or drain batch: a later batch
    must see sockets made since."""

    def __init__(self, proc: str = "/proc"):
        self.proc = proc
        self._tcp: dict = {}
        self._unix: dict = {}
        self._netns: dict[int, object] = {}

    def _space(self, tgid: int):
        """The key of tgid's network namespace (its inode; the tgid itself when unreadable)."""
        if tgid not in self._netns:
            self._netns[tgid] = netns_of(tgid, self.proc) or ("pid", tgid)
        return self._netns[tgid]

    def tcp(self, tgid: int) -> dict[int, TcpSocket]:
        space = self._space(tgid)
        if space not in self._tcp:
            self._tcp[space] = tcp_sockets(tgid, self.proc)
        return self._tcp[space]

    def unix(self, tgid: int) -> set[int]:
        space = self._space(tgid)
        if space not in self._unix:
            self._unix[space] = unix_stream_connections(tgid, self.proc)
        return self._unix[space]


def unix_client_info(name: str) -> events.Event:
    """The FDINFO record naming a unix-socket client connection ("unix:<pid>(<comm>)")."""
    return events.Event(kind=events.FDINFO, ret=events.FD_CLIENT, family=events.AF_UNIX, payload=name.encode())


class FdClassifier:
    """Decides what an fd of the target is; remembers the fd's link so each fd is reported once."""

    def __init__(self, proc: str = "/proc", aof_names: tuple[str, ...] = ("appendonly", ".aof"),
                 listen_ports: dict[int, set] | None = None):
        self.proc = proc
        self.aof_names = aof_names
        self.listen_ports = listen_ports or {}  # tgid -> its listening ports
        self._seen: dict[tuple[int, int], tuple[str, int]] = {}  # (tgid, fd) -> (link, kind) reported

    def link(self, tgid: int, fd: int) -> str | None:
        """What the fd is now ("socket:[123]", a path, "pipe:[4]"), None once it is closed."""
        try:
            return os.readlink(f"{self.proc}/{tgid}/fd/{fd}")
        except OSError:
            return None

    def reported(self, tgid: int, fd: int, link: str) -> bool:
        """True when this classifier classified the fd while it already was `link`."""
        seen = self._seen.get((tgid, fd))
        return seen is not None and seen[0] == link

    def forget(self, tgid: int, fd: int) -> None:
        self._seen.pop((tgid, fd), None)

    def classify(self, tgid: int, fd: int, link: str, sockets: SocketTables) -> tuple[int, events.Event | None]:
        """(fd kind, FDINFO event to insert in the stream, or None when this link was reported already)."""
        seen = self._seen.get((tgid, fd))
        if seen is not None and seen[0] == link:
            return seen[1], None
        kind, info = self._kind_of(tgid, fd, link, sockets)
        self._seen[(tgid, fd)] = (link, kind)
        if info is not None:
            info.tgid = tgid
            info.tid = tgid
            info.fd = fd
        return kind, info

    def _kind_of(self, tgid: int, fd: int, link: str, sockets: SocketTables) -> tuple[int, events.Event | None]:
        if link.startswith("socket:["):
            inode = int(link[8:-1])
            sock = sockets.tcp(tgid).get(inode)
            if sock is None:
                if inode in sockets.unix(tgid):
                    return events.FD_CLIENT, unix_client_info(unix_client_name(tgid, fd, self.proc))
                # a listening unix socket, UDP, netlink, or a socket closed since: never a client
                return events.FD_IGNORE, None
            if sock.state == _TCP_LISTEN:
                return events.FD_IGNORE, None
            # "in": accepted on the target's own port; "out": Redis connected out (master link,
            # cluster bus, MIGRATE); the stitcher decides what it is from the traffic.
            direction = "in" if sock.local_port in self.listen_ports.get(tgid, ()) else "out"
            return events.FD_CLIENT, events.Event(kind=events.FDINFO, ret=events.FD_CLIENT, family=sock.family,
                                                  peer_addr=sock.peer_addr, peer_port=sock.peer_port,
                                                  payload=f"{direction}:{sock.local_port}".encode())
        base = os.path.basename(link)
        if any(name in base for name in self.aof_names):
            return events.FD_AOF, events.Event(kind=events.FDINFO, ret=events.FD_AOF,
                                               payload=link.encode()[-200:])
        return events.FD_IGNORE, None  # files, pipes, eventfds, epoll: never decoded

    def scan(self, tgid: int, tick: Callable[[int, int], None] | None = None
             ) -> list[tuple[int, int, events.Event | None]]:
        """(fd, kind, FDINFO) for every fd the process holds now (fds closed while scanning are left
        out); `tick(done, total)` is called every SCAN_TICK_FDS fds."""
        try:
            names = os.listdir(f"{self.proc}/{tgid}/fd")
        except OSError:
            return []
        sockets = SocketTables(self.proc)
        out = []
        for done, name in enumerate(sorted(names, key=int)):
            if tick is not None and done and done % SCAN_TICK_FDS == 0:
                tick(done, len(names))
            fd = int(name)
            link = self.link(tgid, fd)
            if link is None:
                continue
            kind, info = self.classify(tgid, fd, link, sockets)
            out.append((fd, kind, info))
        return out
