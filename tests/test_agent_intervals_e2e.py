"""`agent --interval S` through the real CLI against a real redis-server under a bounded redis-benchmark
load: one JSON line per interval ("event": "interval") with that interval's own counts, between the
stall lines ("event": "stall", their fields unchanged), and the intervals' counts add up to the
requests sent (the session's last, shorter interval included)."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

from agent_util import send, start_agent
from tracer_proc import json_lines

pytestmark = pytest.mark.bpf

N = 20_000      # per command: redis-benchmark -n N -t set,get sends N SETs and N GETs


def test_agent_interval_lines_add_up_to_the_benchmark_and_stall_lines_keep_their_fields(redis_factory):
    benchmark = shutil.which("redis-benchmark")
    assert benchmark, "redis-benchmark is not installed"
    server = redis_factory(enable_debug_command="yes")
    agent, _ = start_agent(server.port, "--interval", "0.5", "--stall-ms", "50")
    try:
        bench = subprocess.run([benchmark, "-h", "127.0.0.1", "-p", str(server.port), "-n", str(N), "-c", "4",
                                "-t", "set,get", "-q"], capture_output=True, text=True, timeout=120)
        assert bench.returncode == 0, bench.stderr
        send(server.port, ("DEBUG", "SLEEP", "0.2"), 1)     # a stall: its line comes between the intervals
        time.sleep(1.5)
        rc, out = agent.stop(signal.SIGTERM)
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
    assert rc == 0, agent.stderr_text()[-2000:]
    lines = json_lines(out)
    intervals = [line for line in lines if line["event"] == "interval"]
    stalls = [line for line in lines if line["event"] == "stall"]
    assert len(intervals) + len(stalls) == len(lines)
    assert [line["interval"] for line in intervals] == list(range(1, len(intervals) + 1))
    assert len(intervals) >= 4 and all(line["interval_s"] == 0.5 for line in intervals[:-1])
    assert intervals[-1]["interval_s"] <= 0.5       # the session's rest, printed at SIGTERM
    for command in ("SET", "GET"):
        counts = [line["commands"].get(command, {}).get("count", 0) for line in intervals]
        assert sum(counts) == N, (command, counts)     # each line its own interval's: no request twice
    busy = [line for line in intervals if line["requests"]]
    assert all(line["commands"][c]["p99_us"] > 0 for line in busy for c in ("SET", "GET") if c in line["commands"])
    assert all(abs(line["rps"] - line["requests"] / line["interval_s"]) <= 1 for line in busy)
    # the stall line is the one it was before --interval existed
    assert stalls and stalls[0]["culprit"]["command"] == "DEBUG SLEEP", stalls   # named with its subcommand, as --full names it
    assert {"time", "event", "instance", "pid", "class", "duration_ms", "culprit", "victims", "victim_added_ms",
            "evidence", "advice"} == set(stalls[0])
