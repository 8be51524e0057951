"""Stalls no command caused, explained by the scheduler (probes/sched.c, `--why`): a real redis-server, real
clients measuring what they saw, a real CPU hog and a real fork."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from tracer_proc import TracerProcess, report_of

pytestmark = pytest.mark.bpf

HOG_S = 1.5
# a real-time busy loop that ends itself (HOG_S), killed anyway by `timeout` after 5 s
HOG = f"import time\nend = time.monotonic() + {HOG_S}\nwhile time.monotonic() < end:\n    pass\n"


class PacedGets:
    """One client: a GET every 2 ms, its slowest round trip and when it started; bounded in time and count."""

    def __init__(self, server, max_s=10.0):
        self.stop = threading.Event()
        self.worst_ms = 0.0
        self.count = 0
        self.thread = threading.Thread(target=self._run, args=(server, max_s), daemon=True)
        self.thread.start()

    def _run(self, server, max_s):
        c = server.client(socket_timeout=10)
        deadline = time.monotonic() + max_s
        while not self.stop.is_set() and time.monotonic() < deadline and self.count < 5_000:
            t0 = time.perf_counter()
            c.get("k")
            self.worst_ms = max(self.worst_ms, (time.perf_counter() - t0) * 1000)
            self.count += 1
            time.sleep(0.002)
        c.close()

    def finish(self):
        self.stop.set()
        self.thread.join(10)


def pin(pid: int, cpu: int) -> None:
    subprocess.run(["taskset", "-a", "-cp", str(cpu), str(pid)], check=True, capture_output=True)


def test_cpu_starvation_is_a_stall_naming_the_competitor(redis_server, tmp_path):
    cpu = os.cpu_count() - 1
    pin(redis_server.pid, cpu)
    trace = tmp_path / "starved.rtrace"
    tracer = TracerProcess("record", "--why", "--port", str(redis_server.port), "-o", str(trace))
    load = PacedGets(redis_server)
    time.sleep(0.5)
    hog = subprocess.Popen(["timeout", "5", "taskset", "-c", str(cpu), "chrt", "-f", "10", sys.executable, "-c", HOG])
    time.sleep(0.3)
    with open(f"/proc/{hog.pid}/task/{hog.pid}/children") as f:     # timeout's child: taskset exec'ed into python
        hog_pid = int(f.read().split()[0])
    hog.wait(10)
    time.sleep(0.5)
    load.finish()
    code, _ = tracer.stop()
    assert code == 0, tracer.stderr_text()
    report = report_of(trace)
    starved = [s for s in report["stalls"] if s["class"] == "cpu-starved"]
    assert starved, report["stalls"]
    stall = max(starved, key=lambda s: s["duration_ms"])
    competitor = stall["offcpu"]["competitors"][0]
    assert competitor["pid"] == hog_pid and competitor["comm"].startswith("python"), stall
    assert competitor["share"] > 0.8
    assert stall["cause"] == f"{competitor['comm']} (pid {competitor['pid']})"
    assert stall["victims"] >= 1
    assert abs(stall["duration_ms"] - load.worst_ms) <= 0.2 * load.worst_ms, (stall["duration_ms"], load.worst_ms)
    # the kernel's real-time throttling gives other tasks 5 % of each second: the client waits up to ~0.95 s
    assert load.worst_ms >= 300
