"""Unix-socket clients of a real redis-server, traced for real: each is named by its process
("unix:<pid>(<comm>)"), and its requests say why they have no arrival time instead of a silent null."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.tracer_proc import TracerProcess, json_lines
from tracer.stitch.model import ARRIVAL_UNKNOWN_UNIX

PASSWORD = "Unix-pw-3x9"
BENCH_SETS = 300        # a run of a few ms: its connections are gone before the next drain (--poll-ms)


def unix_client(path):
    import redis

    return redis.Redis(unix_socket_path=str(path), password=PASSWORD, driver_info=None, protocol=2, socket_timeout=5)


@pytest.mark.bpf
def test_unix_clients_are_named_by_process_and_their_arrival_is_marked_unknown(redis_factory, tmp_path):
    path = tmp_path / "redis.sock"
    redis_factory(unixsocket=str(path), unixsocketperm="700", requirepass=PASSWORD)
    older = unix_client(path)           # connected before the trace: named from /proc at attach
    older.ping()
    # --full: redis-benchmark -a sends AUTH and its first SET as one batch, which the default mode's
    # trace prints as one line (named AUTH, batch 2); this test counts the SETs of each client
    tracer = TracerProcess("trace", "--full", "--socket", str(path), "--json", env={"REDISCLI_AUTH": PASSWORD})
    newer = unix_client(path)
    for i in range(100):
        newer.set(f"k{i}", "v")
    for i in range(50):
        older.get(f"k{i}")
    bench = subprocess.Popen(["redis-benchmark", "-s", str(path), "-a", PASSWORD, "-n", str(BENCH_SETS), "-c", "2",
                              "-t", "set", "-q"],
                             stdout=subprocess.DEVNULL)
    assert bench.wait(timeout=60) == 0
    # one-shot clients, each gone long before the drain: named from their connect() (probes/unixconn.c)
    pings = [subprocess.Popen(["redis-cli", "-s", str(path), "ping"], stdout=subprocess.PIPE,
                              env={**os.environ, "REDISCLI_AUTH": PASSWORD}) for _ in range(3)]
    assert [p.communicate(timeout=30)[0].strip() for p in pings] == [b"PONG"] * 3
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    requests = json_lines(out)
    with open("/proc/self/comm") as f:
        me = f"unix:{os.getpid()}({f.read().strip()})"
    by_client = {}
    for r in requests:
        by_client.setdefault((r["client"], r["command"]), 0)
        by_client[(r["client"], r["command"])] += 1
    assert by_client[(me, "SET")] == 100 and by_client[(me, "GET")] == 50
    assert by_client[(f"unix:{bench.pid}(redis-benchmark)", "SET")] == BENCH_SETS
    assert all(by_client[(f"unix:{p.pid}(redis-cli)", "PING")] == 1 for p in pings)
    assert not [r for r in requests if r["client"] == "unix"]      # every connection named
    assert all(not r["arrival_known"] and r["arrival_unknown"] == ARRIVAL_UNKNOWN_UNIX for r in requests)
    # the tracer's own INFO connection (over the socket, authenticated) is not in the trace
    assert not [r for r in requests if r["command"] == "INFO"]
    assert "did not say its version" not in tracer.stderr_text()
    assert PASSWORD not in out and PASSWORD not in tracer.stderr_text()
    older.close()
    newer.close()


def test_a_server_with_only_a_unix_socket_is_found_and_queried_through_it(tmp_path):
    """port 0: no TCP at all. --socket finds the server and doctor/the query before attaching use it."""
    import time

    from tracer.credentials import Credentials
    from tracer.kernel import doctor
    from tracer.kernel.target import find_target, query_redis_info
    from tracer.sandbox.redis_server import find_redis_server

    path = tmp_path / "only.sock"
    proc = subprocess.Popen([find_redis_server(), "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700",
                             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        target = find_target(socket=str(path))
        assert (target.pid, target.port, target.unix_socket) == (proc.pid, None, str(path))
        assert query_redis_info(target, Credentials(password=PASSWORD))["redis_version"].startswith("7.")
        checks = {c.name: c for c in doctor.check_target(doctor.SystemProbes(), None, None,
                                                          Credentials(password=PASSWORD, socket=str(path)))}
        assert checks["PING"].line() == f"✓ PING: socket {path} answered"
        assert "arrival time is unknown" in checks["unix-socket clients"].detail
        assert "wants a password" in doctor.check_target(doctor.SystemProbes(), proc.pid, None,
                                                         Credentials())[1].detail
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_in_own_mount_namespace(tmp_path, *extra: str):
    """(redis-server process, its socket path) with a tmpfs over the socket's directory in the server's
    own mount namespace only, as in a container: the path names nothing (or something else) here."""
    import shutil
    import time

    from tracer.sandbox.redis_server import find_redis_server

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1)")
    private = tmp_path / "private"
    private.mkdir()
    path = private / "redis.sock"
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f"mount -t tmpfs none {private} && exec {find_redis_server()} --port 0 "
                             f"--unixsocket {path} --save '' --appendonly no --dir {private} {' '.join(extra)}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/proc/{proc.pid}/root{path}") and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc, path


def test_a_socket_inside_another_mount_namespace_is_reached_through_the_process_root(tmp_path):
    """A container's /tmp is not ours: its socket path is opened under /proc/<pid>/root."""
    from tracer.credentials import Credentials
    from tracer.kernel.target import find_target, query_redis_info

    proc, path = server_in_own_mount_namespace(tmp_path, "--requirepass", PASSWORD)
    try:
        assert not path.exists()            # not visible from here
        target = find_target(pid=proc.pid)
        assert target.unix_socket == str(path)
        assert target.endpoint().socket == f"/proc/{proc.pid}/root{path}"
        assert query_redis_info(target, Credentials(password=PASSWORD))["redis_version"].startswith("7.")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.bpf
def test_a_connect_to_the_same_path_elsewhere_does_not_misname_later_clients(tmp_path):
    """The kernel pairs connects to the target's socket path with its accepts, in order. Connects to
    the same path in another mount namespace (another server's socket) shift that pairing: SO_PEERCRED
    contradicts it for the next client, which is named by SO_PEERCRED, and the queue starts over, so a
    client gone before the drain is named by its own connect(), not by a stray one."""
    import shutil
    import socket
    import sys
    import time

    from tracer.kernel import events
    from tracer.kernel.bpf_session import ProbeSession
    from tracer.kernel.target import find_target

    if shutil.which("nsenter") is None:
        pytest.skip("needs nsenter(1)")
    server, path = server_in_own_mount_namespace(tmp_path)
    other = socket.socket(socket.AF_UNIX)
    connect = f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(path)!r}); s.sendall(b'PING\\r\\n'); s.recv(8)"
    session = None

    def names():
        time.sleep(0.2)
        return [events.decode(raw).payload.decode() for raw in session.drain()
                if events.decode(raw).kind == events.FDINFO]

    try:
        other.bind(str(path))           # the same path, here: another listener (it never answers)
        other.listen(8)
        session = ProbeSession([find_target(pid=server.pid)])
        session.attach()
        assert "unixconn" in session.probes
        stray = f"import socket; socket.socket(socket.AF_UNIX).connect({str(path)!r})"
        for _ in range(2):              # queued for the target, but they wait in the other listener's backlog
            assert subprocess.run([sys.executable, "-c", stray], timeout=30).returncode == 0
        client = socket.socket(socket.AF_UNIX)
        client.connect(f"/proc/{server.pid}/root{path}")    # the target, by a path the probe does not know
        client.sendall(b"PING\r\n")
        assert client.recv(16) == b"+PONG\r\n"
        with open("/proc/self/comm") as f:
            assert names() == [f"unix:{os.getpid()}({f.read().strip()})"]
        assert session.unix_queue_restarts == 1
        # a client inside the server's mount namespace, by the known path, gone before the drain
        inside = subprocess.Popen(["nsenter", f"--mount=/proc/{server.pid}/ns/mnt", sys.executable, "-c", connect])
        assert inside.wait(timeout=30) == 0
        found = names()                 # nsenter execs python in place: the same pid
        assert len(found) == 1 and found[0].startswith(f"unix:{inside.pid}("), found
        client.close()
    finally:
        if session is not None:
            session.close()
        other.close()
        server.terminate()
        server.wait(timeout=10)
