"""Target discovery against a fake /proc tree: no root, no running Redis."""
from __future__ import annotations

import os

import pytest

from tracer.errors import TracerError
from tracer.kernel.target import find_target

TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


class FakeProc:
    """Builds <tmp>/proc with net/tcp{,6} and per-pid comm, exe and fd links."""

    def __init__(self, root):
        self.root = root
        self.tcp: list[str] = []
        self.tcp6: list[str] = []
        (root / "net").mkdir(parents=True)
        self._write_net()

    @property
    def path(self) -> str:
        return str(self.root)

    def _write_net(self):
        (self.root / "net" / "tcp").write_text(TCP_HEADER + "".join(self.tcp))
        (self.root / "net" / "tcp6").write_text(TCP_HEADER + "".join(self.tcp6))

    def socket(self, port: int, inode: int, state: str = "0A", ipv6: bool = False):
        if ipv6:
            local = f"00000000000000000000000001000000:{port:04X}"
            line = (f"   0: {local} 00000000000000000000000000000000:0000 {state} 00000000:00000000 "
                    f"00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")
            self.tcp6.append(line)
        else:
            line = (f"   0: 0100007F:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 "
                    f"00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")
            self.tcp.append(line)
        self._write_net()

    def process(self, pid: int, comm: str, exe: str, sockets: dict[int, int] = None, cmdline: tuple = ()):
        """sockets: fd -> socket inode."""
        d = self.root / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
        (d / "cmdline").write_text("\0".join((exe, *cmdline)) + "\0")
        os.symlink(exe, d / "exe")  # dangling is fine: only readlink() is used
        os.symlink("/dev/null", d / "fd" / "0")
        for fd, inode in (sockets or {}).items():
            os.symlink(f"socket:[{inode}]", d / "fd" / str(fd))

    def redis(self, pid: int, port: int, inode: int, ipv6_inode: int | None = None):
        self.socket(port, inode)
        sockets = {6: inode}
        if ipv6_inode:
            self.socket(port, ipv6_inode, ipv6=True)
            sockets[7] = ipv6_inode
        self.process(pid, "redis-server", "/usr/bin/redis-check-rdb", sockets)


@pytest.fixture
def proc(tmp_path):
    return FakeProc(tmp_path / "proc")


def test_pid_of_a_redis_server(proc):
    proc.redis(100, 6379, 5001, ipv6_inode=5002)
    proc.socket(40000, 5003, state="01")  # an established connection, not a listener
    t = find_target(pid=100, proc=proc.path)
    assert (t.pid, t.port, t.listen_ports, t.comm) == (100, 6379, [6379], "redis-server")
    assert t.exe == "/usr/bin/redis-check-rdb"


def test_pid_that_is_not_redis(proc):
    proc.process(200, "nginx", "/usr/sbin/nginx")
    with pytest.raises(TracerError, match="pid 200 is nginx, not redis-server") as err:
        find_target(pid=200, proc=proc.path)
    assert "redis-server" in err.value.fix


def test_pid_that_does_not_exist(proc):
    with pytest.raises(TracerError, match="no process with pid 999"):
        find_target(pid=999, proc=proc.path)


def test_pid_with_a_port_it_does_not_listen_on(proc):
    proc.redis(100, 6379, 5001)
    with pytest.raises(TracerError, match="does not listen on port 7000") as err:
        find_target(pid=100, port=7000, proc=proc.path)
    assert "6379" in err.value.fix


def test_port_found(proc):
    proc.redis(100, 6379, 5001)
    proc.redis(300, 7001, 5010)
    t = find_target(port=7001, proc=proc.path)
    assert (t.pid, t.port, t.listen_ports) == (300, 7001, [7001])


def test_port_found_through_ipv6_listener(proc):
    proc.socket(6390, 5020, ipv6=True)
    proc.process(400, "redis-server", "/usr/bin/redis-server", {9: 5020})
    t = find_target(port=6390, proc=proc.path)
    assert (t.pid, t.listen_ports) == (400, [6390])


def test_port_free(proc):
    proc.redis(100, 6379, 5001)
    with pytest.raises(TracerError, match="nothing listens on TCP port 6380"):
        find_target(port=6380, proc=proc.path)


def test_port_owned_by_something_else(proc):
    proc.socket(8080, 6001)
    proc.process(500, "python3", "/usr/bin/python3.11", {3: 6001})
    with pytest.raises(TracerError, match=r"port 8080 belongs to pid 500 \(python3\), not redis-server"):
        find_target(port=8080, proc=proc.path)


def test_none_running(proc):
    proc.process(200, "nginx", "/usr/sbin/nginx")
    with pytest.raises(TracerError, match="no redis-server is running") as err:
        find_target(proc=proc.path)
    assert "--pid" in err.value.fix


def test_the_only_one_running(proc):
    proc.process(200, "bash", "/usr/bin/bash")
    proc.redis(100, 6379, 5001)
    t = find_target(proc=proc.path)
    assert (t.pid, t.port) == (100, 6379)


def test_several_running_lists_them(proc):
    proc.redis(100, 6379, 5001)
    proc.redis(300, 7001, 5010)
    with pytest.raises(TracerError) as err:
        find_target(proc=proc.path)
    message = str(err.value)
    assert message.startswith("2 redis-server processes are running")
    assert "pid 100 port [6379]" in message and "pid 300 port [7001]" in message
    assert err.value.fix == "choose one with --pid or --port"


def test_comm_renamed_but_exe_is_redis(proc):
    # A redis-server started through a wrapper keeps its exe name even if comm differs.
    proc.socket(6379, 5001)
    proc.process(100, "custom-name", "/opt/redis/bin/redis-server", {6: 5001})
    assert find_target(pid=100, proc=proc.path).port == 6379


def test_port_of_docker_proxy_names_the_server_it_forwards_to(proc):
    proc.redis(100, 6379, 5001)
    proc.socket(8080, 6001)
    proc.process(500, "docker-proxy", "/usr/bin/docker-proxy", {3: 6001},
                 cmdline=("-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", "8080",
                          "-container-ip", "172.17.0.2", "-container-port", "6379"))
    t = find_target(port=8080, proc=proc.path)
    assert t.pid == 100
    assert t.note.startswith("port 8080 is docker-proxy (pid 500), a proxy for redis-server pid 100 ")
    assert t.note.endswith("; tracing that")


def test_port_of_a_proxy_forwarding_to_no_redis_names_pid(proc):
    proc.socket(8080, 6001)
    proc.process(500, "docker-proxy", "/usr/bin/docker-proxy", {3: 6001}, cmdline=("-container-port", "9999"))
    with pytest.raises(TracerError, match=r"port 8080 belongs to pid 500 \(docker-proxy\), not redis-server") as err:
        find_target(port=8080, proc=proc.path)
    assert "--pid" in err.value.fix
