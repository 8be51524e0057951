"""Who is at the other end of a unix-socket connection to the target, without reading kernel structs.

A unix client has no address (accept() returns an empty sockaddr_un), so the client is named by
its process: the target's end of the connection is borrowed for a moment with pidfd_getfd(2)
(Linux 5.6+, CAP_SYS_PTRACE over the target) and asked SO_PEERCRED, the pid that connect()ed.
Nothing is read from or written to the borrowed socket; closing the copy leaves the target's
connection as it was. The pid is the connecting process's: a client that handed its socket to
another process (fork, SCM_RIGHTS) is named by the one that connected.

For the tracer's own unix connection (the INFO sampler's, which is kept out of the trace) the
target's end is found from our socket's peer inode, from NETLINK_SOCK_DIAG (UNIX_DIAG_PEER).
"""
from __future__ import annotations

import ctypes
import os
import socket
import struct

SYS_PIDFD_GETFD = 438           # the same number on every architecture (asm-generic table)
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
UDIAG_SHOW_PEER = 0x4
UNIX_DIAG_PEER = 2
_libc = None


def _syscall():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.syscall


def borrow_fd(pid: int, fd: int) -> int:
    """A copy of fd `fd` of process `pid` in this process (close it); raises OSError."""
    pidfd = os.pidfd_open(pid)
    try:
        copy = _syscall()(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return copy
    finally:
        os.close(pidfd)


def peer_pid(pid: int, fd: int) -> int | None:
    """The pid that connected to the unix socket `fd` of process `pid`, None when it cannot be told
    (closed since, not permitted, a kernel without pidfd_getfd)."""
    try:
        copy = borrow_fd(pid, fd)
    except (OSError, AttributeError):
        return None
    try:
        sock = socket.socket(fileno=copy)
    except OSError:
        os.close(copy)
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer, _uid, _gid = struct.unpack("3i", creds)
        return peer or None
    except OSError:
        return None
    finally:
        sock.close()


def unix_peer_name(pid: int, comm: str) -> str:
    """The client name a unix connection gets: "unix:1234(redis-benchmark)"."""
    return f"unix:{pid}({comm})"


def describe_peer(pid: int | None, proc: str = "/proc") -> str:
    """unix_peer_name of a live pid (its comm from /proc), "unix" when unknown."""
    if not pid:
        return "unix"
    try:
        with open(f"{proc}/{pid}/comm", encoding="utf-8", errors="replace") as f:
            comm = f.read().strip()
    except OSError:
        comm = "exited"
    return unix_peer_name(pid, comm)


def peer_inode(inode: int) -> int | None:
    """The inode of the other end of the unix socket `inode` (of the tracer's network namespace)."""
    # struct unix_diag_req: family, protocol, pad, states, ino, show, cookie[2]
    req = struct.pack("=BBHIII2I", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, inode, UDIAG_SHOW_PEER, 0xFFFFFFFF, 0xFFFFFFFF)
    msg = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + req
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.send(msg)
            data = nl.recv(65536)
    except OSError:
        return None
    length, kind = struct.unpack_from("=IH", data)
    if kind == NLMSG_ERROR or len(data) < 16 + 16:
        return None
    # struct unix_diag_msg (16 bytes), then rtattrs
    pos, end = 16 + 16, min(length, len(data))
    while pos + 4 <= end:
        rta_len, rta_type = struct.unpack_from("=HH", data, pos)
        if rta_len < 4:
            break
        if rta_type == UNIX_DIAG_PEER and rta_len >= 8:
            return struct.unpack_from("=I", data, pos + 4)[0] or None
        pos += (rta_len + 3) & ~3
    return None
