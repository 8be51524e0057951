"""deploy/: what a fleet installs is well-formed, and the systemd unit passes systemd's own check."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tracer_proc import REPO

DEPLOY = os.path.join(REPO, "deploy")
UNIT = os.path.join(DEPLOY, "systemd", "redis-tracer-agent.service")
INSTALLED_AT = "/opt/redis-tracer/.venv/bin/redis-tracer"     # where docs/DEPLOY.md installs it


def unit_value(key: str) -> str:
    for line in open(UNIT):
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"{key}= not in {UNIT}")


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: no systemd here")
    assert unit_value("ExecStart").startswith(INSTALLED_AT + " agent ")
    # verify checks that ExecStart's binary exists: the unit as shipped, pointed at this checkout's
    here = os.path.join(os.path.dirname(sys.executable), "redis-tracer")
    unit = tmp_path / "redis-tracer-agent.service"
    unit.write_text(open(UNIT).read().replace(INSTALLED_AT, here))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert unit_value("Nice") == "19" and unit_value("MemoryMax") and unit_value("User") != "root"


def test_systemd_verify_catches_a_broken_unit(tmp_path):
    """The check above is a real one: a unit with a missing binary fails it."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: no systemd here")
    unit = tmp_path / "redis-tracer-agent.service"
    unit.write_text(open(UNIT).read().replace(INSTALLED_AT, str(tmp_path / "missing")))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "missing" in proc.stderr


def test_grafana_dashboard_queries_the_agents_metrics():
    with open(os.path.join(DEPLOY, "grafana", "redis-tracer.json")) as f:
        board = json.load(f)
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    for metric in ("redis_tracer_request_duration_seconds_bucket", "redis_tracer_phase_seconds_sum",
                   "redis_tracer_stalls_total", "redis_tracer_lost_events_total"):
        assert metric in exprs, metric
    assert "histogram_quantile(0.99" in exprs


def test_container_and_daemonset_mount_the_host_read_only():
    dockerfile = open(os.path.join(DEPLOY, "container", "Dockerfile")).read()
    assert "python3-bpfcc" in dockerfile and "FROM debian" in dockerfile
    daemonset = open(os.path.join(DEPLOY, "kubernetes", "daemonset.yaml")).read()
    assert "hostPID: true" in daemonset
    for path in ("/lib/modules", "/usr/src", "/sys/kernel"):
        assert f"path: {path}" in daemonset, path
    assert daemonset.count("readOnly: true") >= 3
