"""record → report/export on a real redis-server: counts as sent, live == offline, files safe."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from tracer_proc import REPO, TracerProcess

pytestmark = pytest.mark.bpf


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "tracer", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_recorded_session_reports_what_clients_sent(redis_server, tmp_path):
    trace = tmp_path / "s.rtrace"
    live_json = tmp_path / "live.json"
    # --full: the Chrome export below draws a slice per request, so it needs every request's record
    # (the default engine mode's record counts: tests/test_engine_modes_e2e.py)
    tracer = TracerProcess("record", "--full", "--port", str(redis_server.port), "-o", str(trace),
                           "--json-out", str(live_json))
    c = redis_server.client()
    sent = {"SET": 120, "GET": 200, "HSET": 40, "LPUSH": 30, "ZADD": 25}
    for i in range(sent["SET"]):
        c.set(f"s:{i}", i)
    for i in range(sent["GET"]):
        c.get(f"s:{i % 50}")
    for i in range(sent["HSET"]):
        c.hset("h", f"f{i}", i)
    for i in range(sent["LPUSH"]):
        c.lpush("l", i)
    pipe = c.pipeline(transaction=False)
    for i in range(sent["ZADD"]):
        pipe.zadd("z", {f"m{i}": i})
    pipe.execute()
    c.close()
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    assert stat.S_IMODE(os.stat(trace).st_mode) == 0o600

    report = json.loads(cli("report", str(trace), "--json").stdout)
    for name, n in sent.items():
        assert report["commands"][name]["count"] == n, name
    assert report["schema"] == 1 and report["target"]["port"] == redis_server.port
    assert report["target"]["pid"] == redis_server.pid and report["target"]["redis_version"].startswith("7")
    assert report["lost_events"] == 0 and report["connections"]["accepted"] >= 1
    # the live analysis of the same session is the very same JSON
    assert json.loads(live_json.read_text()) == report

    human = cli("report", str(trace)).stdout
    assert "GET" in human and "200" in human

    out = tmp_path / "trace.json"
    cli("export", str(trace), "--format", "chrome", "-o", str(out))
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert all({"name", "ts", "dur", "pid", "tid"} <= e.keys() and e["dur"] >= 0 for e in slices)
    requests = [e for e in slices if e["cat"] == "request"]
    assert sum(1 for e in requests if e["name"].startswith("GET ")) == sent["GET"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert "main thread" in names and any(n.startswith("client 127.0.0.1:") for n in names)
    # phases nest inside their request on the same track
    by_track = {}
    for e in slices:
        by_track.setdefault((e["pid"], e["tid"]), []).append(e)
    req = requests[0]
    phases = [e for e in by_track[(req["pid"], req["tid"])] if e["cat"] == "phase"
              and req["ts"] <= e["ts"] <= req["ts"] + req["dur"]]
    assert phases and all(e["ts"] + e["dur"] <= req["ts"] + req["dur"] + 0.01 for e in phases)


def test_record_refuses_to_overwrite(redis_server, tmp_path):
    trace = tmp_path / "exists.rtrace"
    trace.write_bytes(b"keep me")
    proc = cli("record", "--port", str(redis_server.port), "-o", str(trace), "--duration", "1", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert trace.read_bytes() == b"keep me"
