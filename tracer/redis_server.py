"""Start and stop a throw-away redis-server on a free loopback port (tests, demo, benchmarks)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from tracer.errors import TracerError

HOST = "127.0.0.1"
# Loopback only, no persistence unless a caller asks for it; --daemonize no keeps the pid ours.
DEFAULT_CONFIG = {"bind": HOST, "save": "", "appendonly": "no", "protected-mode": "yes", "daemonize": "no"}


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def find_redis_server() -> str:
    path = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(p, os.X_OK)), None)
    if not path:
        raise TracerError("redis-server is not installed", "run sudo scripts/bootstrap (or apt-get install redis-server)")
    return path


def config_args(config: dict) -> list[str]:
    """{"appendfsync": "always", "io_threads": 2, "appendonly": True} -> --appendfsync always --io-threads 2 ...

    A list repeats the option, each item split into its words (redis-server quotes one argument
    holding spaces as one word): {"rename_command": ["CONFIG cfg", "ACL acl"]} ->
    --rename-command CONFIG cfg --rename-command ACL acl."""
    args = []
    for key, value in config.items():
        option = f"--{key.replace('_', '-')}"
        if isinstance(value, list):
            for item in value:
                args += [option, *str(item).split()]
            continue
        if value is True or value is False:
            value = "yes" if value else "no"
        args += [option, str(value)]
    return args


def raise_open_files_limit(need: int) -> None:
    """Raise this process's RLIMIT_NOFILE soft limit to `need` (a redis-server started afterwards
    inherits it: many-connection tests and benchmarks); TracerError when the hard limit is lower."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:   # raising it needs CAP_SYS_RESOURCE
        raise TracerError(f"{need} open files needed, the hard limit is {hard}", "raise it: ulimit -Hn")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def ping(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """One raw RESP PING: no client library, so it works while redis-py is busy elsewhere."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
            return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")  # up, with requirepass
    except OSError:
        return False


class RedisServer:
    """A redis-server child process. Use as a context manager, or call start() and stop().

    Extra config is passed as keyword arguments (underscores become dashes) and overrides
    DEFAULT_CONFIG: RedisServer(appendonly="yes", appendfsync="always", io_threads=2).
    """

    def __init__(self, port: int | None = None, dir: str | None = None, binary: str | None = None,
                 start_timeout: float = 10.0, stop_timeout: float = 10.0, **config):
        self.requested_port = port
        self.port = port or 0
        self.dir = dir
        self.binary = binary
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.config = {**DEFAULT_CONFIG, **{k.replace("_", "-"): v for k, v in config.items()}}
        self.proc: subprocess.Popen | None = None
        self._own_dir = False
        self._log = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir or "", "redis.log")

    def client(self, **kwargs):
        import redis

        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host=HOST, port=self.port, **kwargs)

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return " | ".join(line.strip() for line in f.read().splitlines()[-lines:] if line.strip())
        except OSError:
            return ""

    def start(self) -> "RedisServer":
        if self.proc:
            raise TracerError(f"redis-server pid {self.pid} already started by this object")
        self.binary = self.binary or find_redis_server()
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="redis-tracer-")
            self._own_dir = True
        os.makedirs(self.dir, exist_ok=True)
        # A port picked by free_port() can be taken before redis binds it: retry with a fresh one.
        attempts = 1 if self.requested_port else 3
        for attempt in range(attempts):
            self.port = self.requested_port or free_port()
            if self._spawn_and_wait():
                return self
            in_use = "Address already in use" in self.log_tail(20)
            if not (in_use and attempt + 1 < attempts):
                break
        tail = self.log_tail()
        self._close_log()  # keep the dir: its log says why
        raise TracerError(f"redis-server did not come up on port {self.port}" + (f": {tail}" if tail else ""),
                          f"see {self.log_path}")

    def _spawn_and_wait(self) -> bool:
        args = [self.binary, "--port", str(self.port), "--dir", self.dir] + config_args(self.config)
        self._close_log()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if ping(self.port):
                return True
            time.sleep(0.02)
        self._terminate()
        return False

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=self.stop_timeout)

    def _close_log(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Terminate (then kill after stop_timeout) and remove the data dir if we made it."""
        self._terminate()
        self._close_log()
        if self._own_dir and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self._own_dir = False

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, pid={self.pid}, dir={self.dir!r})"
