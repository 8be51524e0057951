"""Real network namespaces for tests: `ip netns add`, loopback only, removed afterwards; a
redis-server started inside one; a forwarding proxy like docker-proxy."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tracer.sandbox.redis_server import find_redis_server


def ip_netns_available() -> str | None:
    """Why real namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "no `ip` (iproute2)"
    return None


class NetNamespace:
    """A network namespace with only its loopback up."""

    def __init__(self, tag: str):
        self.name = f"rtr-{tag}-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, timeout=10)
        self.run("ip", "link", "set", "lo", "up")
        self.procs: list[subprocess.Popen] = []

    def cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), check=True, capture_output=True, text=True, timeout=timeout)

    def redis_server(self, port: int, tmp_path, *extra: str) -> subprocess.Popen:
        """A redis-server in the namespace (`ip netns exec` execs it: the Popen's pid is its pid)."""
        d = tmp_path / f"ns-redis-{port}"
        d.mkdir(exist_ok=True)
        proc = subprocess.Popen(self.cmd(find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--dir", str(d), *extra),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(self.cmd("redis-cli", "-p", str(port), "ping"), capture_output=True, text=True)
            if ping.stdout.strip() == "PONG":
                return proc
            time.sleep(0.05)
        raise AssertionError(f"redis-server in {self.name} did not come up on port {port}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)


@pytest.fixture
def netns():
    why = ip_netns_available()
    if why:
        pytest.skip(f"network namespaces: {why}")
    made: list[NetNamespace] = []

    def make(tag: str = "ns") -> NetNamespace:
        made.append(NetNamespace(tag))
        return made[-1]

    yield make
    for ns in made:
        ns.close()


# A TCP forwarder on the host's loopback that connects into a namespace, as docker-proxy forwards
# a host port to a container: each accepted connection gets a socket made inside the namespace.
PROXY = r"""
import ctypes, os, socket, sys, threading
listen_port, ns_path, dest_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)

def inside():
    box = []
    def make():
        fd = os.open(ns_path, os.O_RDONLY)
        libc.setns(fd, 0x40000000)
        os.close(fd)
        box.append(socket.create_connection(("127.0.0.1", dest_port)))
    t = threading.Thread(target=make); t.start(); t.join()
    return box[0]

def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen_port))
srv.listen(16)
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    up = inside()
    threading.Thread(target=pump, args=(c, up), daemon=True).start()
    threading.Thread(target=pump, args=(up, c), daemon=True).start()
"""


def start_proxy(listen_port: int, ns: NetNamespace, dest_port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", PROXY, str(listen_port), f"/var/run/netns/{ns.name}",
                             str(dest_port)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    ns.procs.append(proc)
    assert proc.stdout.readline().strip() == "ready"
    return proc
