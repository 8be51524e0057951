"""Stalls no command caused, explained by the scheduler (probes/sched.c, `--why`): a real redis-server, real
clients measuring what they saw, a real CPU hog and a real fork."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tracer.kernel import events
from tracer_proc import TracerProcess, report_of

pytestmark = pytest.mark.bpf

HOG_S = 1.5
# a real-time busy loop that ends itself (HOG_S), killed anyway by `timeout` after 5 s
HOG = f"import time\nend = time.monotonic() + {HOG_S}\nwhile time.monotonic() < end:\n    pass\n"


class PacedGets:
    """One client: a GET every 2 ms, its slowest round trip and when it started; bounded in time and count."""

    def __init__(self, server, max_s=10.0, avoid_cpu=None):
        self.avoid_cpu = avoid_cpu
        self.stop = threading.Event()
        self.worst_ms = 0.0
        self.count = 0
        self.rtts: list = []        # (sent at, perf_counter s; round trip ms)
        self.thread = threading.Thread(target=self._run, args=(server, max_s), daemon=True)
        self.thread.start()

    def _run(self, server, max_s):
        if self.avoid_cpu is not None:
            # this thread only (pid 0): a client queued behind the hog would wait unseen by Redis
            os.sched_setaffinity(0, set(range(os.cpu_count())) - {self.avoid_cpu})
        c = server.client(socket_timeout=10)
        deadline = time.monotonic() + max_s
        while not self.stop.is_set() and time.monotonic() < deadline and self.count < 5_000:
            t0 = time.perf_counter()
            c.get("k")
            rtt = (time.perf_counter() - t0) * 1000
            self.worst_ms = max(self.worst_ms, rtt)
            self.rtts.append((t0, rtt))
            self.count += 1
            time.sleep(0.002)
        c.close()

    def worst_during(self, a: float, b: float) -> float:
        """The slowest round trip of a GET in flight at some time in [a, b] (perf_counter s)."""
        return max((rtt for t0, rtt in self.rtts if t0 <= b and t0 + rtt / 1000 >= a), default=0.0)

    def finish(self):
        self.stop.set()
        self.thread.join(10)


def pin(pid: int, cpu: int) -> None:
    subprocess.run(["taskset", "-a", "-cp", str(cpu), str(pid)], check=True, capture_output=True)


def starve(server, cpu: int):
    """GETs every 2 ms while a real-time busy loop holds the CPU redis-server is pinned to: (hog pid, load)."""
    load = PacedGets(server, avoid_cpu=cpu)
    time.sleep(0.5)
    hog = subprocess.Popen(["timeout", "5", "taskset", "-c", str(cpu), "chrt", "-f", "10", sys.executable, "-c", HOG])
    time.sleep(0.3)
    with open(f"/proc/{hog.pid}/task/{hog.pid}/children") as f:     # timeout's child: taskset exec'ed into python
        hog_pid = int(f.read().split()[0])
    hog.wait(10)
    time.sleep(0.5)
    load.finish()
    return hog_pid, load


@pytest.mark.parametrize("mode", ["--full", "--engine"])
def test_cpu_starvation_is_a_stall_naming_the_competitor(redis_server, mode):
    cpu = os.cpu_count() - 1
    pin(redis_server.pid, cpu)
    # diagnose follows the main thread off its CPU by default (--why)
    tracer = TracerProcess("diagnose", mode, "--json", "--port", str(redis_server.port))
    hog_pid, load = starve(redis_server, cpu)
    code, out = tracer.stop()
    assert code == 0, tracer.stderr_text()
    report = json.loads(out)
    seen = [(s["class"], s["duration_ms"], s.get("found_by"), s["evidence"][:1]) for s in report["stalls"]]
    starved = [s for s in report["stalls"] if s["class"] == "cpu-starved"]
    assert starved, seen
    stall = max(starved, key=lambda s: s["duration_ms"])
    competitor = stall["offcpu"]["competitors"][0]
    assert competitor["pid"] == hog_pid and competitor["comm"].startswith("python"), stall
    assert competitor["share"] > 0.8
    # Redis's own evidence: no command in SLOWLOG for the stall, which agrees that none took the time
    assert any(line.startswith("SLOWLOG has no command") for line in stall["redis"]["agree"]), stall["redis"]
    assert stall["cause"] == f"{competitor['comm']} (pid {competitor['pid']})"
    assert stall["victims"] >= 1
    assert abs(stall["duration_ms"] - load.worst_ms) <= 0.2 * load.worst_ms, (load.worst_ms, seen)
    # the kernel's real-time throttling gives other tasks 5 % of each second: the client waits up to ~0.95 s
    assert load.worst_ms >= 300


def test_trace_json_victims_point_to_the_cpu_starved_stall(redis_server):
    cpu = os.cpu_count() - 1
    pin(redis_server.pid, cpu)
    tracer = TracerProcess("trace", "--json", "--why", "--port", str(redis_server.port))
    hog_pid, load = starve(redis_server, cpu)
    code, out = tracer.stop()
    assert code == 0, tracer.stderr_text()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(lines) >= 100
    victims = [doc for doc in lines if doc.get("blocked_by")]
    assert victims and all(doc["command"] == "GET" for doc in victims)
    worst = max(victims, key=lambda doc: doc["latency_us"])
    assert worst["blocked_by"]["class"] == "cpu-starved"
    assert worst["blocked_by"]["culprit"].endswith(f"(pid {hog_pid})")
    slowest = sorted((doc for doc in lines if doc.get("latency_us")), key=lambda doc: -doc["latency_us"])[:3]
    assert abs(worst["latency_us"] / 1000 - load.worst_ms) <= 0.2 * load.worst_ms, \
        (load.worst_ms, [(d["latency_us"], d["phases_us"], d.get("blocked_by")) for d in slowest])
    assert all(doc["latency_us"] >= 1000 for doc in victims)


def test_fork_for_bgsave_is_a_fork_stall_with_its_duration(redis_factory, tmp_path):
    server = redis_factory(enable_debug_command="yes")
    c = server.client(socket_timeout=60)
    c.execute_command("DEBUG", "POPULATE", 600, "big", 1_000_000)     # ~600 MB: a fork of tens of ms
    trace = tmp_path / "fork.rtrace"
    tracer = TracerProcess("record", "--why", "--stall-ms", "10", "--port", str(server.port), "-o", str(trace))
    load = PacedGets(server)
    time.sleep(0.5)
    t0 = time.perf_counter()
    c.bgsave()
    bgsave_ms = (time.perf_counter() - t0) * 1000
    fork_usec = int(c.info("stats")["latest_fork_usec"])   # INFO stats in Redis 7
    time.sleep(0.5)
    load.finish()
    code, _ = tracer.stop()
    assert code == 0, tracer.stderr_text()
    deadline = time.monotonic() + 15
    while c.info("persistence")["rdb_bgsave_in_progress"] and time.monotonic() < deadline:
        time.sleep(0.1)     # the child's save ends before the server is stopped
    report = report_of(trace)
    forks = [s for s in report["stalls"] if s["class"] == "fork"]
    assert len(forks) == 1, report["stalls"]
    stall = forks[0]
    fork = stall["offcpu"]["forks"][0]
    assert fork["trigger"] == "BGSAVE" and stall["cause"] == "fork for BGSAVE"
    assert fork["rss_bytes"] > 500 * 2**20
    assert abs(fork["ms"] * 1000 - fork_usec) <= 0.2 * fork_usec, (fork, fork_usec)
    # BGSAVE's own client waited for the fork; the GETs (every 2 ms) that arrived in the busy span (the fork
    # and what follows it before the next epoll_wait: copy-on-write faults) waited what the stall says they did
    # (its round trip also holds rdbSaveBackground's work around the fork and, on a loaded machine, the
    # client's own scheduling: 13.8 ms of fork in a 19.1 ms round trip was seen in CI; the fork itself is
    # checked against latest_fork_usec above)
    assert fork["ms"] <= bgsave_ms + 1, (fork, bgsave_ms)
    assert stall["duration_ms"] >= fork["ms"] and stall["victims"] >= 1
    get_ms = load.worst_during(t0, t0 + stall["duration_ms"] / 1000)
    assert abs(stall["victim_added_ms"] - get_ms) <= 0.2 * get_ms, (stall["victim_added_ms"], get_ms)
    assert fork_usec >= 10_000
    # Redis's own evidence, joined: INFO's latest_fork_usec after the stall agrees with the traced fork
    redis_side = stall["redis"]
    assert redis_side["info"]["latest_fork_usec"] == fork_usec
    assert any(line.startswith("INFO latest_fork_usec") for line in redis_side["agree"]), redis_side


def test_calm_traffic_has_no_stalls_with_the_sched_probes(redis_server, tmp_path):
    trace = tmp_path / "calm.rtrace"
    tracer = TracerProcess("record", "--why", "--port", str(redis_server.port), "-o", str(trace))
    bench = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(redis_server.port), "-t", "get,set",
                            "-n", "20000", "-c", "4", "-q"], capture_output=True, text=True, timeout=60)
    assert bench.returncode == 0, bench.stderr
    code, _ = tracer.stop()
    assert code == 0, tracer.stderr_text()
    report = report_of(trace)
    assert report["requests"] >= 40_000
    assert report["stalls"] == []


def test_a_sleep_in_the_kernel_is_blocked_naming_the_wait(redis_factory, tmp_path):
    server = redis_factory(enable_debug_command="yes")
    c = server.client(socket_timeout=10)
    trace = tmp_path / "blocked.rtrace"
    tracer = TracerProcess("record", "--why", "--port", str(server.port), "-o", str(trace))
    c.ping()                # connected before the measured command
    time.sleep(0.3)
    t0 = time.perf_counter()
    c.execute_command("DEBUG", "SLEEP", "0.3")      # the main thread sleeps in nanosleep, outside epoll_wait
    sleep_ms = (time.perf_counter() - t0) * 1000
    code, _ = tracer.stop()
    assert code == 0, tracer.stderr_text()
    (stall,) = report_of(trace)["stalls"]
    assert stall["class"] == "blocked", stall
    assert stall["cause"].startswith("do_nanosleep <- hrtimer_nanosleep"), stall   # symbolized, below schedule()
    wait = stall["offcpu"]["waits"][0]
    assert wait["state"] == "sleeping (S)" and "nanosleep" in wait["stack"]
    assert abs(stall["duration_ms"] - sleep_ms) <= 0.2 * sleep_ms, (stall["duration_ms"], sleep_ms)
    # Redis's SLOWLOG timed DEBUG for the whole stall: said next to it, as a disagreement with "blocked"
    assert any(line.startswith("SLOWLOG DEBUG 30") for line in stall["redis"]["disagree"]), stall["redis"]


def test_a_kernel_without_the_sched_tracepoints_traces_without_them(redis_server, monkeypatch):
    from bcc import BPF

    from tracer.kernel.bpf_session import ProbeSession
    from tracer.kernel.target import find_target

    real = BPF.tracepoint_exists
    monkeypatch.setattr(BPF, "tracepoint_exists", staticmethod(
        lambda category, event: event != "sched_switch" and real(category, event)))
    session = ProbeSession([find_target(port=redis_server.port)], why=True)
    try:
        session.attach()
        assert "sched" not in session.probes and session.annotator is None
        assert "--why: no sched probes, this kernel lacks sched:sched_switch" in session.describe()
        c = redis_server.client()
        c.set("k", "v")
        time.sleep(0.1)
        assert any(raw[events.KIND_BYTE] == events.READ for raw in session.drain())
    finally:
        session.close()
