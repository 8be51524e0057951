"""Trace files under faults, with a real `record` against a real redis-server: created 0600, SIGKILL
mid-load leaves a readable file, a full disk gives one clear line, keeps the file so far and ends it with a
trailer saying "disk full"."""
from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from reliability_util import Load, cli
from tracer_proc import TracerProcess

pytestmark = pytest.mark.bpf


def wait_for_size(path, size: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            n = os.stat(path).st_size
        except FileNotFoundError:
            n = 0
        if n >= size:
            return n
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {size} bytes")


def test_sigkill_of_record_during_load_leaves_a_readable_file(redis_server, tmp_path):
    path = tmp_path / "killed.rtrace"
    tracer = TracerProcess("record", "--port", str(redis_server.port), "-o", str(path))
    load = Load(redis_server.port, max_requests=400_000, max_seconds=30).start()
    try:
        header_end = wait_for_size(path, 1)
        wait_for_size(path, header_end + 64 * 1024)       # several blocks are on disk
        time.sleep(0.5)
        tracer.proc.send_signal(signal.SIGKILL)           # mid-load, mid-block
        rc, _ = tracer.wait(timeout=30)
    finally:
        sent = load.stop()
    assert rc == -signal.SIGKILL
    assert sent > 0 and load.errors == 0
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()

    proc = cli("report", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert 0 < report["commands"]["SET"]["count"] <= sent
    err = proc.stderr.decode()
    assert "warning: the recording ends" in err and "without a trailer (the tracer stopped before closing it)" in err
    assert "probably killed" not in err and "Traceback" not in err
    text = cli("report", str(path))
    assert text.returncode == 0 and b"SET" in text.stdout and b"Traceback" not in text.stderr
    out = tmp_path / "killed.json"
    exp = cli("export", str(path), "-o", str(out))
    assert exp.returncode == 0 and json.loads(out.read_text())["traceEvents"]


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], check=True,
                   timeout=30)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], timeout=30)


def test_disk_full_gives_one_clear_line_and_keeps_the_file(redis_server, small_tmpfs):
    path = small_tmpfs / "full.rtrace"
    # --show-values and varied values: the records compress less, the 1 MiB fills within seconds
    # --full: what --show-values needs (explicit: without it the tracer says once that it selects it)
    tracer = TracerProcess("record", "--full", "--port", str(redis_server.port), "-o", str(path), "--show-values",
                           "--duration", "60")
    load = Load(redis_server.port, max_requests=2_000_000, max_seconds=60, value=os.urandom(48).hex().encode())
    load.start()
    try:
        rc, out = tracer.wait(timeout=90)
    finally:
        load.stop()
    err = tracer.stderr_text()
    assert rc == 1, err  # a runtime failure, not a usage error
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("attached:")]
    assert len(lines) == 1 and lines[0].startswith("redis-tracer: disk full writing "), err
    kept = re.search(r": (\d+) records kept up to block \d+ ", lines[0])
    assert kept and "Traceback" not in err, err
    assert load.errors == 0                      # Redis did not notice
    assert os.path.getsize(path) > 512 * 1024    # what was written stays
    proc = cli("report", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["commands"]["SET"]["count"] > 1000
    # the trailer says why the recording ended: not mistaken for a killed tracer
    assert proc.stderr.decode().splitlines() == [
        f"redis-tracer: warning: recording stopped: disk full after {int(kept.group(1)):,} records"], proc.stderr
