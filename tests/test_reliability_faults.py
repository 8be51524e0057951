"""Faults around a running tracer, all against real redis-servers:

* the traced redis-server restarted (same --port) or SIGKILLed mid-trace: the tracer says "the traced
  redis-server exited", flushes, keeps everything recorded, exits 0 (it does not follow the new pid);
* the tracer SIGKILLed: every BPF program, map and link it loaded is gone with it;
* ring buffer overflow (tiny ring, slow consumer): lost events counted, never silent;
* a client that disconnects in the middle of a large reply: the request is reported, partial.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from reliability_util import Load, call, cli, connect, resp
from tracer_proc import REPO, TracerProcess, json_lines, report_of

from tracer.sandbox.redis_server import ping

pytestmark = pytest.mark.bpf

EXITED = "the traced redis-server exited"


def traffic(port: int, prefix: str, n: int = 20) -> None:
    s = connect(port)
    for i in range(n):
        assert call(s, "SET", f"{prefix}:{i}", "v") == b"+OK\r\n"
    s.close()


@pytest.mark.parametrize("how", ["restart", "sigkill"])
def test_target_exit_mid_trace_flushes_and_exits_0(redis_factory, tmp_path, how):
    server = redis_factory()
    port = server.port
    trace = TracerProcess("trace", "--port", str(port), "--json")
    path = tmp_path / "exit.rtrace"
    record = TracerProcess("record", "--port", str(port), "-o", str(path))
    traffic(port, "before", 25)
    time.sleep(0.3)
    old_pid = server.pid
    if how == "restart":
        server.stop()                                   # SIGTERM: a clean shutdown
        again = redis_factory(port=port)                # same port, new pid: not followed
        assert again.pid != old_pid
    else:
        server.proc.send_signal(signal.SIGKILL)          # not reaped yet: a zombie for the tracer
    rc, out = trace.wait(timeout=30)
    rc2, _ = record.wait(timeout=30)
    for t, code in ((trace, rc), (record, rc2)):
        err = t.stderr_text()
        assert code == 0, err
        assert EXITED in err and "Traceback" not in err
    recs = json_lines(out)
    assert sorted(r["key"] for r in recs if r["command"] == "SET") == sorted(f"before:{i}" for i in range(25))
    assert "traced: " in trace.stderr_text()
    proc = cli("report", str(path), "--json")
    assert proc.returncode == 0 and b"warning" not in proc.stderr, proc.stderr   # clean trailer
    assert json.loads(proc.stdout)["commands"]["SET"]["count"] == 25


def test_ctrl_c_while_attaching_says_so_in_one_line(redis_server, tmp_path):
    path = tmp_path / "never.rtrace"
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "record", "--port", str(redis_server.port),
                             "-o", str(path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = redis_server.client()
        base = client.info("stats")["total_connections_received"]
        deadline = time.monotonic() + 30
        # the tracer asks Redis for INFO just before attaching, then opens its INFO sampler's connection:
        # once the first is gone and the second is there, it compiles
        while time.monotonic() < deadline and proc.poll() is None:
            if (client.info("stats")["total_connections_received"] >= base + 2
                    and client.info("clients")["connected_clients"] == 2):
                break
            time.sleep(0.02)
        time.sleep(0.2)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130
    assert err.splitlines() == ["redis-tracer: interrupted while attaching: nothing was traced"], err
    assert out == "" and not path.exists()
    assert ping(redis_server.port)


def test_target_exit_says_so_once_and_closes_its_connections(redis_factory, tmp_path):
    server = redis_factory()
    path = tmp_path / "gone.rtrace"
    live = TracerProcess("live", "--port", str(server.port), "--duration", "60", "--record", str(path))
    clients = [connect(server.port) for _ in range(3)]     # open when Redis dies: the kernel closes them
    for i, c in enumerate(clients):
        assert call(c, "SET", f"k{i}", "v") == b"+OK\r\n"
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGKILL)
    rc, out = live.wait(timeout=60)
    for c in clients:
        c.close()
    err = live.stderr_text()
    assert rc == 0 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if "exited" in line] == [
        "redis-tracer: the traced redis-server exited; stopping"], err
    conns = re.findall(r"(\d+) accepted.*?, (\d+) closed, (\d+) open", out)
    assert conns and conns[-1] == ("3", "3", "0"), out        # the final summary
    report = report_of(path)                    # the recording ends them the same way
    assert report["connections"]["accepted"] == report["connections"]["closed"] == 3, report["connections"]


# -- SIGKILL of the tracer: nothing stays attached -------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF = 321           # x86_64
BPF_PROG_GET_FD_BY_ID, BPF_MAP_GET_FD_BY_ID, BPF_LINK_GET_FD_BY_ID = 13, 14, 30


def bpf_object_exists(cmd: int, obj_id: int) -> bool:
    attr = (ctypes.c_uint32 * 4)(obj_id, 0, 0, 0)
    fd = _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd >= 0:
        os.close(fd)
        return True
    err = ctypes.get_errno()
    assert err == errno.ENOENT, os.strerror(err)
    return False


def bpf_objects_of(pid: int) -> dict[str, set[int]]:
    """prog/map/link ids behind the BPF fds a process holds (from /proc/PID/fdinfo)."""
    found = {"prog_id": set(), "map_id": set(), "link_id": set()}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        for name in found:
            m = re.search(rf"^{name}:\s*(\d+)", text, re.M)
            if m:
                found[name].add(int(m.group(1)))
    return found


def uprobe_events() -> str:
    for path in ("/sys/kernel/tracing/uprobe_events", "/sys/kernel/debug/tracing/uprobe_events"):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            continue
    return ""


@pytest.mark.parametrize("extra", [[], ["--exec-probes"]])
def test_sigkill_of_the_tracer_leaves_nothing_attached(redis_server, extra):
    if extra and not os.path.exists("/usr/bin/redis-server"):
        pytest.skip("no redis-server binary with symbols for --exec-probes")
    tracer = TracerProcess("trace", "--port", str(redis_server.port), "--json", *extra)
    traffic(redis_server.port, "x", 5)
    objects = bpf_objects_of(tracer.proc.pid)
    assert len(objects["prog_id"]) >= 10 and objects["map_id"], objects
    pid = tracer.proc.pid
    tracer.proc.send_signal(signal.SIGKILL)
    tracer.wait(timeout=30)
    deadline = time.monotonic() + 20
    left = None
    while time.monotonic() < deadline:
        left = {(kind, i) for kind, cmd in (("prog_id", BPF_PROG_GET_FD_BY_ID), ("map_id", BPF_MAP_GET_FD_BY_ID),
                                           ("link_id", BPF_LINK_GET_FD_BY_ID))
                for i in objects[kind] if bpf_object_exists(cmd, i)}
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"still loaded after SIGKILL: {sorted(left)}"
    assert f"_{pid}" not in uprobe_events() and f"bcc_{pid}" not in uprobe_events()
    # Redis never noticed: it answers, and keeps serving at full speed
    assert ping(redis_server.port)
    traffic(redis_server.port, "after", 200)


# -- ring buffer overflow ---------------------------------------------------------------------------------
def lost_in_summary(stderr: str) -> int:
    line = [x for x in stderr.splitlines() if x.startswith("traced:")][-1]
    return int(re.search(r"(\d+) lost events", line).group(1))


def test_ring_buffer_overflow_is_counted_never_silent(redis_server, tmp_path):
    port = str(redis_server.port)
    # 8 KiB ring, drained every 2 s; --full: a record per read and write is what overflows it and the
    # 1 MiB rescue ring (the default engine mode sends ~150 bytes per request to `trace`, fewer to `record`)
    small = ["--full", "--ringbuf-pages", "2", "--poll-ms", "2000"]
    trace = TracerProcess("trace", "--port", port, "--json", *small)
    path = tmp_path / "lossy.rtrace"
    record = TracerProcess("record", "--port", port, "-o", str(path), *small, "--fail-on-lost")
    assert "ring 8KiB" in trace.stderr_text()
    load = Load(redis_server.port, max_requests=300_000, max_seconds=3).start()
    time.sleep(3.5)
    sent = load.stop()
    assert sent > 1000 and load.errors == 0
    rc, out = trace.stop(timeout=60)
    rc2, _ = record.stop(timeout=60)
    # without --fail-on-lost a loss is reported, not an exit status; with it, exit 3 once all is written
    assert rc == 0 and rc2 == 3, trace.stderr_text() + record.stderr_text()
    assert "events were lost (--fail-on-lost)" in record.stderr_text()
    assert cli("report", str(path), "--fail-on-lost").returncode == 3
    traced = sum(1 for r in json_lines(out) if r["command"] == "SET")
    lost = lost_in_summary(trace.stderr_text())
    assert lost > 0 and traced < sent                            # overflowed, and says so
    rep = cli("report", str(path), "--json")
    assert rep.returncode == 0, rep.stderr
    report = json.loads(rep.stdout)
    assert report["lost_events"] > 0
    assert re.search(r"recorded: .* ([1-9]\d*) lost events", record.stderr_text())
    text = cli("report", str(path)).stdout.decode()
    assert "lost" in text.lower()
    # a healthy ring on the same load loses nothing
    ok = TracerProcess("trace", "--full", "--port", port, "--json", "--fail-on-lost")    # a line per pipelined command
    load = Load(redis_server.port, max_requests=20_000, max_seconds=10).start()
    load._thread.join(15)
    sent = load.stop()
    rc, out = ok.stop()
    assert lost_in_summary(ok.stderr_text()) == 0 and rc == 0     # nothing lost: --fail-on-lost passes
    assert sum(1 for r in json_lines(out) if r["command"] == "SET") == sent


def test_bad_ringbuf_pages_is_one_line(redis_server):
    for bad in ("3", "0", "-4"):
        proc = cli("trace", "--port", str(redis_server.port), "--ringbuf-pages", bad, "--duration", "1")
        assert proc.returncode == 2 and b"Traceback" not in proc.stderr
        assert proc.stderr.decode().strip().splitlines() == [
            f"redis-tracer: --ringbuf-pages {bad} is not a power of two between 1 and 262144"]


# -- a client that goes away in the middle of a large reply -----------------------------------------------------
def test_client_disconnect_mid_reply_is_reported_partial(redis_server):
    port = redis_server.port
    value = os.urandom(1024) * (32 * 1024)            # 32 MiB
    s = connect(port)
    s.sendall(resp("SET", "huge", value))
    assert s.recv(16) == b"+OK\r\n"
    s.close()
    # --full: a partial reply is told from the reply's bytes (the engine sees only its first write's head)
    tracer = TracerProcess("trace", "--full", "--port", str(port), "--json")
    c = connect(port)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sendall(resp("GET", "huge"))
    first = c.recv(64)
    assert first.startswith(b"$33554432\r\n")
    c.close()                                         # a few bytes read, then gone
    time.sleep(0.5)
    assert ping(port)
    traffic(port, "after-abort", 10)                  # Redis and the tracer go on
    rc, out = tracer.stop()
    assert rc == 0 and "Traceback" not in tracer.stderr_text()
    recs = json_lines(out)
    gets = [r for r in recs if r["command"] == "GET" and r["key"] == "huge"]
    assert len(gets) == 1, (recs, tracer.stderr_text())
    get = gets[0]
    assert get["reply_type"] == "partial" and get["latency_us"]
    assert get["reply_bytes"] is not None and 0 < get["reply_bytes"] < len(value)   # partial
    assert sorted(r["key"] for r in recs if r["command"] == "SET") == sorted(f"after-abort:{i}" for i in range(10))
