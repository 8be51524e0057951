"""Network namespaces: which one a process is in, and opening a socket inside another one.

A redis-server in a container (`ip netns exec`, Docker, Kubernetes) has its own loopback, its own
socket tables (/proc/<pid>/net/*) and its own ports: 127.0.0.1:6379 in the tracer's namespace may
be nothing, or another server. Everything that reads ports or connects is therefore done in the
target's namespace. A socket keeps the namespace it was made in, so connecting from a short-lived
thread that joined the target's namespace (setns, CAP_SYS_ADMIN) gives a connection the rest of the
tracer can use from any thread.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Callable, TypeVar

from tracer.errors import TracerError

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def netns_of(pid: int | str, proc: str = "/proc") -> int | None:
    """The inode of the process's network namespace ("self" for ours), None when unreadable."""
    try:
        return os.stat(f"{proc}/{pid}/ns/net").st_ino
    except OSError:
        return None


def same_netns(pid: int, proc: str = "/proc") -> bool:
    """True when the process shares the tracer's network namespace (or it cannot be told)."""
    theirs, ours = netns_of(pid, proc), netns_of("self", proc)
    return theirs is None or ours is None or theirs == ours


def describe_netns(pid: int, proc: str = "/proc") -> str:
    """"net:[4026532301]", as `ls -l /proc/<pid>/ns/net` and `lsns` show it."""
    try:
        return os.readlink(f"{proc}/{pid}/ns/net")
    except OSError:
        return "an unknown network namespace"


def call_in_netns(pid: int, fn: Callable[[], T], proc: str = "/proc") -> T:
    """fn() run in the network namespace of `pid`: directly when it is ours, else in a thread that
    joins it first (the thread ends with fn, so no other code of the tracer runs in it)."""
    if same_netns(pid, proc):
        return fn()
    result: list = []

    def run():
        try:
            fd = os.open(f"{proc}/{pid}/ns/net", os.O_RDONLY)
        except OSError as err:
            result.append(err)
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                result.append(PermissionError(err, f"cannot enter the network namespace of pid {pid} "
                                                   f"({os.strerror(err)}; it needs CAP_SYS_ADMIN)"))
                return
            result.append(fn())
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            result.append(err)
        finally:
            os.close(fd)

    thread = threading.Thread(target=run, name=f"netns-{pid}", daemon=True)
    thread.start()
    thread.join()
    if not result:
        raise TracerError(f"could not work in the network namespace of pid {pid}")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]
