"""`live --interval S --count N` through the real CLI: one JSON line (or plain block) per interval when
stdout is not a terminal, each with that interval's own figures, and the run ends after N intervals."""
from __future__ import annotations

import json
import re

import pytest

from tracer_proc import TracerProcess

pytestmark = pytest.mark.bpf


@pytest.mark.parametrize("mode", ("--full", "--engine"))
def test_json_line_per_interval_with_its_own_counts(redis_server, mode):
    tracer = TracerProcess("live", "--port", str(redis_server.port), mode, "--interval", "1", "--count", "3")
    client = redis_server.client()
    for i in range(300):
        client.get(f"k{i}")
    client.close()
    rc, out = tracer.wait(timeout=60)
    assert rc == 0, tracer.stderr_text()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["interval"] for line in lines] == [1, 2, 3] and all(line["interval_s"] == 1.0 for line in lines)
    gets = [line["commands"].get("GET", {}).get("count", 0) for line in lines]
    assert sum(gets) == 300, gets              # cumulative figures would count them again in each line
    assert gets[-1] == 0 and lines[-1]["requests"] == 0, lines[-1]
    busy = [line for line in lines if line["commands"].get("GET")]
    assert all(line["commands"]["GET"]["p99_us"] > 0 and line["rps"] == line["requests"] for line in busy)
    assert "redis-tracer: traced redis-server" in tracer.stderr_text()   # the summary, on stderr


def test_plain_block_per_interval(redis_server):
    tracer = TracerProcess("live", "--port", str(redis_server.port), "--interval", "0.5", "--count", "2", "--plain")
    client = redis_server.client()
    for i in range(50):
        client.set(f"k{i}", "v")
    client.close()
    rc, out = tracer.wait(timeout=60)
    assert rc == 0, tracer.stderr_text()
    intervals = out.split("redis-tracer: traced ")[0]      # the final summary follows them
    assert sum(line.startswith("== ") for line in intervals.splitlines()) == 2
    # in the interval that had them only (a row, or a `SET: count ...` line when the table is too wide)
    assert len(re.findall(r"\n  SET[ :]", intervals)) == 1, intervals


def test_engine_recording_window_subtracts_the_kernel_counts_before_it(redis_server, tmp_path):
    """The engine's aggregates are cumulative: a window starting after the GETs counts none of them."""
    import subprocess
    import sys
    import time

    from tracer_proc import REPO

    trace = tmp_path / "engine.rtrace"
    tracer = TracerProcess("record", "--port", str(redis_server.port), "--engine", "-o", str(trace))
    client = redis_server.client()
    for i in range(200):
        client.get(f"k{i}")
    time.sleep(3.5)                 # ENGINE records (one a second) after the GETs, before the SETs
    for i in range(100):
        client.set(f"k{i}", "v")
    time.sleep(1.5)
    client.close()
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()

    def report(*window):
        proc = subprocess.run([sys.executable, "-m", "tracer", "report", str(trace), "--json", *window], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    whole = report()
    assert whole["mode"] == "engine" and whole["commands"]["GET"]["count"] == 200
    assert whole["commands"]["SET"]["count"] == 100 and whole["duration_s"] >= 5.0
    later = report("--since", "2.5")
    assert "GET" not in later["commands"] and later["commands"]["SET"]["count"] == 100, later["commands"]
    assert sum(later["histograms"]["commands"]["SET"]) == 100
