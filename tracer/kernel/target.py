"""Find the redis-server to trace: by pid, by listening port or unix socket (read from /proc, in
every network namespace), or the only one running.

Ports are per network namespace: a redis-server in a container listens on its own loopback, and
the port the host shows may belong to a forwarding proxy (docker-proxy). So the listening sockets
are read from each process's own /proc/<pid>/net/tcp{,6}, once per namespace.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from tracer.credentials import NO_CREDENTIALS, Credentials
from tracer.errors import TracerError
from tracer.kernel.netns import describe_netns, netns_of, same_netns
from tracer.kernel.redis_client import Endpoint, RespError, redis_connection, socket_path_in

TCP_LISTEN = "0A"
UNIX_LISTENING_FLAGS = "00010000"   # /proc/net/unix Flags column: __SO_ACCEPTCON


@dataclass
class Target:
    pid: int
    exe: str
    listen_ports: list[int]
    port: int | None = None  # the port the user named, or the first TCP listening port
    comm: str = ""
    info: dict = field(default_factory=dict)  # redis_version, io_threads, appendonly, appendfsync...
    unix_socket: str | None = None  # the path of its listening unix socket (as the process sees it)
    netns: int | None = None        # inode of its network namespace
    note: str = ""                  # how it was found, when that is worth a line (another namespace, a proxy)

    def describe(self) -> str:
        port = f" port {self.port}" if self.port else ""
        return f"pid {self.pid}{port} ({self.comm or os.path.basename(self.exe)})"

    def endpoint(self, credentials: Credentials = NO_CREDENTIALS) -> Endpoint | None:
        """Where the tracer asks it for INFO/CONFIG: --socket, else its TCP port on its own loopback,
        else its unix socket; None when it has neither."""
        if credentials.socket:
            return Endpoint(socket=credentials.socket)
        if self.port:
            return Endpoint(port=self.port, netns_pid=self.pid)
        if self.unix_socket:
            return Endpoint(socket=socket_path_in(self.pid, self.unix_socket))
        return None


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _net_lines(proc: str, pid: int | None, name: str) -> list[str]:
    """The rows of a socket table of pid's network namespace (our own without a pid)."""
    path = f"{proc}/{pid}/net/{name}" if pid is not None else f"{proc}/net/{name}"
    if pid is not None and os.path.isdir(f"{proc}/{pid}") and not os.path.exists(f"{proc}/{pid}/net"):
        path = f"{proc}/net/{name}"     # a /proc without per-process net/ (tests' fake trees)
    # a process gone since: no table (never ours in its place)
    try:
        return _read(path).splitlines()[1:]
    except OSError:
        return []


def listening_inodes(proc: str = "/proc", pid: int | None = None) -> dict[int, int]:
    """inode -> port of every TCP socket in LISTEN state (IPv4 and IPv6) in the network namespace
    of `pid` (the tracer's own without one)."""
    result: dict[int, int] = {}
    for name in ("tcp", "tcp6"):
        for line in _net_lines(proc, pid, name):
            cols = line.split()
            if len(cols) < 10 or cols[3] != TCP_LISTEN:
                continue
            port = int(cols[1].rsplit(":", 1)[1], 16)
            result[int(cols[9])] = port
    return result


def tcp_peers(proc: str, pid: int) -> dict[int, tuple[int, int]]:
    """inode -> (local port, remote port) of the connected TCP sockets of pid's namespace."""
    result = {}
    for name in ("tcp", "tcp6"):
        for line in _net_lines(proc, pid, name):
            cols = line.split()
            if len(cols) >= 10 and cols[3] != TCP_LISTEN:
                result[int(cols[9])] = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16))
    return result


def listening_unix_paths(proc: str, pid: int) -> dict[int, str]:
    """inode -> path of every listening unix stream socket with a path, in pid's namespace."""
    result = {}
    for line in _net_lines(proc, pid, "unix"):
        cols = line.split()
        if len(cols) >= 8 and cols[3] == UNIX_LISTENING_FLAGS and cols[7].startswith("/"):
            result[int(cols[6])] = cols[7]
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


def process_cmdline(pid: int, proc: str = "/proc") -> list[str]:
    try:
        return _read(f"{proc}/{pid}/cmdline").split("\0")
    except OSError:
        return []


def is_redis(pid: int, proc: str = "/proc") -> bool:
    comm = process_comm(pid, proc)
    return comm.startswith("redis-server") or os.path.basename(process_exe(pid, proc)).startswith("redis-server")


def listen_ports_of(pid: int, proc: str = "/proc", listening: dict[int, int] | None = None) -> list[int]:
    """The process's TCP listening ports, from its own namespace's tables; `listening`
    (listening_inodes(proc, pid)) when the caller has it: a busy namespace has thousands of sockets."""
    if listening is None:
        listening = listening_inodes(proc, pid)
    return sorted({listening[ino] for ino in socket_inodes(pid, proc) if ino in listening})


def unix_socket_of(pid: int, proc: str = "/proc") -> str | None:
    paths = listening_unix_paths(proc, pid)
    return next((paths[ino] for ino in sorted(socket_inodes(pid, proc)) if ino in paths), None)


def _pids(proc: str) -> list[int]:
    return sorted(int(name) for name in os.listdir(proc) if name.isdigit())


def redis_pids(proc: str = "/proc") -> list[int]:
    return [pid for pid in _pids(proc) if is_redis(pid, proc)]


@dataclass
class _Namespace:
    """The processes of one network namespace, and its table of listening sockets."""

    inode: int | None
    pids: list[int]
    listening: dict[int, int]


def _namespaces(proc: str) -> list[_Namespace]:
    """Every network namespace that has a process, ours first; each one's tables read once."""
    groups: dict[int | None, list[int]] = {}
    for pid in _pids(proc):
        groups.setdefault(netns_of(pid, proc), []).append(pid)
    ours = netns_of("self", proc)
    # ours first; processes whose namespace cannot be read last (or as ours, when ours cannot be)
    order = sorted(groups, key=lambda ns: (ns != ours, ns is None, ns or 0))
    return [_Namespace(ns, groups[ns], listening_inodes(proc, groups[ns][0])) for ns in order]


def _holder(port: int, space: _Namespace, proc: str, redis_only: bool = False) -> int | None:
    """The process of the namespace holding a socket listening on `port`; redis-servers are looked
    at first (other processes may hold thousands of fds)."""
    inodes = {ino for ino, p in space.listening.items() if p == port}
    if not inodes:
        return None
    redis = [pid for pid in space.pids if is_redis(pid, proc)]
    others = [] if redis_only else [pid for pid in space.pids if pid not in set(redis)]
    return next((pid for pid in redis + others if inodes & socket_inodes(pid, proc).keys()), None)


def _proxy_destination_ports(pid: int, listen_port: int, spaces: list[_Namespace], proc: str) -> list[int]:
    """The ports a forwarding proxy sends to: docker-proxy's -container-port, else the remote ports
    of the proxy's own connections other than those it accepted, found in any namespace's table (a
    proxy may make its outgoing sockets inside the container's namespace)."""
    args = process_cmdline(pid, proc)
    for i, arg in enumerate(args[:-1]):
        if arg in ("-container-port", "--container-port") and args[i + 1].isdigit():
            return [int(args[i + 1])]
    own = socket_inodes(pid, proc)
    return sorted({remote for space in spaces for ino, (local, remote) in tcp_peers(proc, space.pids[0]).items()
                   if ino in own and local != listen_port})


def _redis_listening(port: int, spaces: list[_Namespace], proc: str) -> list[int]:
    """The redis-server listening on `port` in each of these namespaces that has one."""
    found = (_holder(port, space, proc, redis_only=True) for space in spaces)
    return [pid for pid in found if pid is not None]


def _find_by_port(port: int, proc: str) -> tuple[int, str]:
    """(pid, note) of the redis-server serving `port`: in our namespace; behind a forwarding proxy
    that listens on it here; or alone in some other namespace."""
    spaces = _namespaces(proc)
    ours = spaces[0] if spaces and spaces[0].inode == netns_of("self", proc) else None
    holder = _holder(port, ours, proc) if ours else None
    if holder is not None and is_redis(holder, proc):
        return holder, ""
    others = [s for s in spaces if s is not ours]
    if holder is not None:
        proxy = holder
        name = process_comm(proxy, proc) or "unknown"
        candidates = sorted({pid for dest in _proxy_destination_ports(proxy, port, spaces, proc)
                             for pid in _redis_listening(dest, spaces, proc)})
        if len(candidates) == 1:
            pid = candidates[0]
            return pid, (f"port {port} is {name} (pid {proxy}), a proxy for redis-server pid {pid} "
                         f"in network namespace {describe_netns(pid, proc)}; tracing that")
        found = f"; it may forward to {', '.join(f'pid {p}' for p in candidates)}" if candidates else ""
        raise TracerError(f"port {port} belongs to pid {proxy} ({name}), not redis-server{found}",
                          "pass the port of a redis-server, or --pid of the redis-server it forwards to "
                          "(`pgrep -a redis-server`)")
    found = _redis_listening(port, others, proc)
    if not found:
        raise TracerError(f"nothing listens on TCP port {port}", "start Redis or pass the right --port")
    if len(found) > 1:
        listing = ", ".join(f"pid {pid} in {describe_netns(pid, proc)}" for pid in found)
        raise TracerError(f"{len(found)} redis-servers listen on port {port} in other network namespaces "
                          f"({listing})", "choose one with --pid")
    pid = found[0]
    return pid, f"redis-server pid {pid} listens on port {port} in network namespace {describe_netns(pid, proc)}"


def _find_by_socket(path: str, proc: str) -> int:
    """The redis-server holding the listening unix socket `path` (as it sees it, or under /proc/N/root)."""
    for pid in redis_pids(proc):
        root = f"{proc}/{pid}/root"
        wanted = path[len(root):] if path.startswith(root + "/") else path
        paths = listening_unix_paths(proc, pid)
        if any(paths.get(ino) in (path, wanted) for ino in socket_inodes(pid, proc)):
            return pid
    raise TracerError(f"no redis-server listens on the unix socket {path}",
                      "check the path (redis-cli -s PATH ping), or pass --pid")


def find_target(pid: int | None = None, port: int | None = None, proc: str = "/proc",
                socket: str | None = None) -> Target:
    """Resolve --pid/--port/--socket/nothing to one redis-server, or raise a TracerError saying why not."""
    note = ""
    if pid is not None:
        if not os.path.isdir(f"{proc}/{pid}"):
            raise TracerError(f"no process with pid {pid}", "check the pid with `pgrep -a redis-server`")
        if not is_redis(pid, proc):
            raise TracerError(f"pid {pid} is {process_comm(pid, proc) or 'unknown'}, not redis-server",
                              "pass the pid of a redis-server")
        ports = listen_ports_of(pid, proc)
        if port is not None and port not in ports:
            raise TracerError(f"redis-server pid {pid} does not listen on port {port}",
                              f"it listens on {ports or 'no TCP port'}")
        if not same_netns(pid, proc):
            note = f"redis-server pid {pid} is in network namespace {describe_netns(pid, proc)}"
    elif port is not None:
        pid, note = _find_by_port(port, proc)
        ports = listen_ports_of(pid, proc)
    elif socket is not None:
        pid = _find_by_socket(socket, proc)
        ports = listen_ports_of(pid, proc)
    else:
        pids = redis_pids(proc)
        if not pids:
            raise TracerError("no redis-server is running", "start one, or pass --pid/--port")
        if len(pids) > 1:
            listing = ", ".join(f"pid {p} port {listen_ports_of(p, proc) or '-'}" for p in pids)
            raise TracerError(f"{len(pids)} redis-server processes are running ({listing})",
                              "choose one with --pid or --port")
        pid = pids[0]
        ports = listen_ports_of(pid, proc)
    return Target(pid=pid, exe=process_exe(pid, proc), listen_ports=ports,
                  port=port if port is not None else (ports[0] if ports else None),
                  comm=process_comm(pid, proc), unix_socket=unix_socket_of(pid, proc),
                  netns=netns_of(pid, proc), note=note)


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def ping_redis(endpoint: Endpoint | int, credentials: Credentials = NO_CREDENTIALS, timeout: float = 2.0) -> str | None:
    """None when PING answers PONG, else why not (the error reply's text, e.g. "NOAUTH ...").
    Exactly one command after the optional AUTH: without credentials a protected Redis counts one
    NOAUTH, which no unauthenticated client can avoid (docs/SECURITY.md)."""
    try:
        with redis_connection(endpoint, credentials, timeout=timeout) as call:
            reply = call("PING")
    except (OSError, ValueError, RespError) as err:
        return _first_line(err)
    return None if reply == "PONG" else f"unexpected reply {str(reply)[:40]!r}"


def query_redis_info(target: Target, credentials: Credentials = NO_CREDENTIALS, timeout: float = 2.0) -> dict:
    """Version and the config that shapes the request path; empty values when Redis will not say.

    One command at a time; the first error other than a refused CONFIG ends it; a renamed CONFIG
    is not called."""
    info = {"redis_version": "", "io_threads": None, "io_threads_do_reads": None,
            "appendonly": None, "appendfsync": None, "dir": None, "appenddirname": None}
    endpoint = target.endpoint(credentials)
    if endpoint is None:
        return info
    try:
        with redis_connection(endpoint, credentials, timeout) as call:
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
