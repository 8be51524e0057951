"""Find the redis-server to trace: by pid, by listening port (read from /proc), or the only one running."""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field

from tracer.credentials import NO_CREDENTIALS, Credentials
from tracer.errors import TracerError

TCP_LISTEN = "0A"


@dataclass
class Target:
    pid: int
    exe: str
    listen_ports: list[int]
    port: int | None = None  # the port the user named, or the first TCP listening port
    comm: str = ""
    info: dict = field(default_factory=dict)  # redis_version, io_threads, appendonly, appendfsync...

    def describe(self) -> str:
        port = f" port {self.port}" if self.port else ""
        return f"pid {self.pid}{port} ({self.comm or os.path.basename(self.exe)})"


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def listening_inodes(proc: str = "/proc") -> dict[int, int]:
    """inode -> port of every TCP socket in LISTEN state (IPv4 and IPv6)."""
    result: dict[int, int] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = _read(f"{proc}/net/{name}").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != TCP_LISTEN:
                continue
            port = int(cols[1].rsplit(":", 1)[1], 16)
            result[int(cols[9])] = port
    return result


def socket_inodes(pid: int, proc: str = "/proc") -> dict[int, int]:
    """inode -> fd of every socket the process holds."""
    result: dict[int, int] = {}
    fd_dir = f"{proc}/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return result
    for name in names:
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            result[int(link[8:-1])] = int(name)
    return result


def process_comm(pid: int, proc: str = "/proc") -> str:
    try:
        return _read(f"{proc}/{pid}/comm").strip()
    except OSError:
        return ""


def process_exe(pid: int, proc: str = "/proc") -> str:
    try:
        return os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        return ""


def is_redis(pid: int, proc: str = "/proc") -> bool:
    comm = process_comm(pid, proc)
    return comm.startswith("redis-server") or os.path.basename(process_exe(pid, proc)).startswith("redis-server")


def listen_ports_of(pid: int, proc: str = "/proc", listening: dict[int, int] | None = None) -> list[int]:
    """The process's TCP listening ports; `listening` (listening_inodes()) when the caller has it:
    /proc/net/tcp lists every socket of the namespace, thousands on a busy host."""
    if listening is None:
        listening = listening_inodes(proc)
    return sorted({listening[ino] for ino in socket_inodes(pid, proc) if ino in listening})


def redis_pids(proc: str = "/proc") -> list[int]:
    pids = []
    for name in os.listdir(proc):
        if name.isdigit() and is_redis(int(name), proc):
            pids.append(int(name))
    return sorted(pids)


def pid_listening_on(port: int, proc: str = "/proc", listening: dict[int, int] | None = None) -> int | None:
    """The process holding the TCP socket listening on `port`, found through socket inodes.
    redis-servers are looked at first: other processes may hold thousands of fds (clients)."""
    if listening is None:
        listening = listening_inodes(proc)
    inodes = {ino for ino, p in listening.items() if p == port}
    if not inodes:
        return None
    redis = redis_pids(proc)
    others = [int(name) for name in os.listdir(proc) if name.isdigit() and int(name) not in redis]
    for pid in redis + others:
        if inodes & socket_inodes(pid, proc).keys():
            return pid
    return None


def find_target(pid: int | None = None, port: int | None = None, proc: str = "/proc") -> Target:
    """Resolve --pid/--port/nothing to one redis-server, or raise a TracerError saying why not."""
    listening = listening_inodes(proc)
    if pid is not None:
        if not os.path.isdir(f"{proc}/{pid}"):
            raise TracerError(f"no process with pid {pid}", "check the pid with `pgrep -a redis-server`")
        if not is_redis(pid, proc):
            raise TracerError(f"pid {pid} is {process_comm(pid, proc) or 'unknown'}, not redis-server",
                              "pass the pid of a redis-server")
        ports = listen_ports_of(pid, proc, listening)
        if port is not None and port not in ports:
            raise TracerError(f"redis-server pid {pid} does not listen on port {port}",
                              f"it listens on {ports or 'no TCP port'}")
    elif port is not None:
        pid = pid_listening_on(port, proc, listening)
        if pid is None:
            raise TracerError(f"nothing listens on TCP port {port}", "start Redis or pass the right --port")
        if not is_redis(pid, proc):
            raise TracerError(f"port {port} belongs to pid {pid} ({process_comm(pid, proc)}), not redis-server",
                              "pass the port of a redis-server")
        ports = listen_ports_of(pid, proc, listening)
    else:
        pids = redis_pids(proc)
        if not pids:
            raise TracerError("no redis-server is running", "start one, or pass --pid/--port")
        if len(pids) > 1:
            listing = ", ".join(f"pid {p} port {listen_ports_of(p, proc, listening) or '-'}" for p in pids)
            raise TracerError(f"{len(pids)} redis-server processes are running ({listing})",
                              "choose one with --pid or --port")
        pid = pids[0]
        ports = listen_ports_of(pid, proc, listening)
    return Target(pid=pid, exe=process_exe(pid, proc), listen_ports=ports,
                  port=port if port is not None else (ports[0] if ports else None),
                  comm=process_comm(pid, proc))


class RespError(Exception):
    """An error reply of the target (its text, e.g. "NOAUTH Authentication required.")."""


def _read_reply(f, depth: int = 0):
    """One RESP2 reply from a buffered socket file (bounded: lines, lengths, nesting)."""
    line = f.readline(65536)
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed or reply line too long")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode(errors="replace")
    if kind == b"-":
        raise RespError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        if n > 16 * 1024 * 1024:
            raise ConnectionError("reply too large")
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("connection closed")
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(body)
        if n < 0:
            return None
        if depth > 4 or n > 10_000:
            raise ConnectionError("reply too deep or too long")
        return [_read_reply(f, depth + 1) for _ in range(n)]
    raise ConnectionError(f"not a RESP reply: {line[:20]!r}")


def _command(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


@contextlib.contextmanager
def redis_connection(port: int, credentials: Credentials = NO_CREDENTIALS, host: str = "127.0.0.1",
                     timeout: float = 2.0):
    """A plain RESP2 connection, authenticated first when there are credentials; yields
    call(*args) -> reply (raises RespError on an error reply).

    Not a client library: a library's connection handshake (HELLO, CLIENT SETINFO ... on versions
    that lack them) adds error replies to the target's statistics."""
    with socket.create_connection((host, port), timeout=timeout) as sock, sock.makefile("rb") as f:
        def call(*args: str):
            sock.sendall(_command(*args))
            return _read_reply(f)

        call.local_port = sock.getsockname()[1]     # the target sees us from this port (fd_of_client)
        auth = credentials.auth_args()
        if auth:
            call(*auth)
        yield call


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def ping_redis(port: int, credentials: Credentials = NO_CREDENTIALS, timeout: float = 2.0) -> str | None:
    """None when PING answers PONG, else why not (the error reply's text, e.g. "NOAUTH ...").
    Exactly one command after the optional AUTH: without credentials a protected Redis counts one
    NOAUTH, which no unauthenticated client can avoid (docs/SECURITY.md)."""
    try:
        with redis_connection(port, credentials, timeout=timeout) as call:
            reply = call("PING")
    except (OSError, ValueError, RespError) as err:
        return _first_line(err)
    return None if reply == "PONG" else f"unexpected reply {str(reply)[:40]!r}"


def query_redis_info(target: Target, credentials: Credentials = NO_CREDENTIALS, host: str = "127.0.0.1",
                     timeout: float = 2.0) -> dict:
    """Version and the config that shapes the request path; empty values when Redis will not say.

    One command at a time; the first error other than a refused CONFIG ends it; a renamed CONFIG
    is not called."""
    info = {"redis_version": "", "io_threads": None, "io_threads_do_reads": None,
            "appendonly": None, "appendfsync": None, "dir": None, "appenddirname": None}
    if not target.port:
        return info
    try:
        with redis_connection(target.port, credentials, host, timeout) as call:
            server = call("INFO", "server")
            for line in str(server or "").splitlines():
                if line.startswith("redis_version:"):
                    info["redis_version"] = line.split(":", 1)[1].strip()
            # COMMAND INFO answers nil for a renamed CONFIG where CONFIG GET would be an error reply
            if call("COMMAND", "INFO", "CONFIG") in ([None], []):
                return info
            for name in ("io-threads", "io-threads-do-reads", "appendonly", "appendfsync", "dir", "appenddirname"):
                try:
                    reply = call("CONFIG", "GET", name)
                except RespError:    # CONFIG forbidden by ACL: the rest would fail too
                    break
                if isinstance(reply, list) and len(reply) >= 2 and reply[0] == name:
                    info[name.replace("-", "_")] = reply[1]
    except (OSError, ValueError, RespError) as err:  # the tracer works without INFO (auth, protected mode...)
        info["error"] = _first_line(err)
    return info
