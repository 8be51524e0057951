"""The setup surface: scripts, CI entry, Vagrantfile, and the bpf-marker policy in conftest."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import types
from pathlib import Path

import pytest

import conftest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["scripts/bootstrap", "scripts/demo", "scripts/test", ".ci/run"]
VAGRANTFILE = REPO / "vagrant" / "Vagrantfile"


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_executable_strict_bash(script):
    path = REPO / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_bootstrap_refuses_non_root_with_one_clear_line(tmp_path):
    # A fake `id` makes this independent of who runs the suite.
    fake_id = tmp_path / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(0o755)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "bootstrap")], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"bootstrap: ERROR: must run as root (fix: sudo {REPO / 'scripts' / 'bootstrap'})"]


def test_demo_and_test_run_bootstrap_then_the_venv():
    demo = (REPO / "scripts" / "demo").read_text()
    assert 'bash "$ROOT/scripts/bootstrap"' in demo
    assert 'exec "$ROOT/.venv/bin/redis-tracer" demo "$@"' in demo
    test = (REPO / "scripts" / "test").read_text()
    assert 'bash "$ROOT/scripts/bootstrap"' in test
    assert 'exec "$ROOT/.venv/bin/python" -m pytest -q "$@"' in test


def test_ci_requires_bpf_and_shows_skips():
    text = (REPO / ".ci" / "run").read_text()
    assert "export REDIS_TRACER_REQUIRE_BPF=1" in text
    assert re.search(r"bash scripts/test -rs\b", text)


def test_vagrantfile_settings():
    text = VAGRANTFILE.read_text()
    assert 'config.vm.box = "bento/ubuntu-24.04"' in text
    assert 'vb.cpus = 2' in text and 'vb.memory = 4096' in text
    assert 'config.vm.synced_folder REPO, "/redis-tracer"' in text
    assert 'inline: "bash /redis-tracer/scripts/bootstrap"' in text
    assert "forwarded_port" not in text  # everything runs on the VM's loopback


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed (only needed to check the Vagrantfile)")
def test_vagrantfile_is_valid_ruby():
    proc = subprocess.run(["ruby", "-c", str(VAGRANTFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Syntax OK" in proc.stdout, proc.stdout + proc.stderr


# --- the bpf marker policy ---------------------------------------------------------------------

def bpf_item(marked: bool = True):
    return types.SimpleNamespace(get_closest_marker=lambda name: object() if marked and name == "bpf" else None)


def test_bpf_test_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(conftest, "bpf_unavailable_reason", lambda: "tracefs: not mounted")
    monkeypatch.delenv(conftest.REQUIRE_BPF_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="BPF tracing unavailable: tracefs: not mounted"):
        conftest.pytest_runtest_setup(bpf_item())


def test_bpf_test_fails_when_bpf_is_required(monkeypatch):
    monkeypatch.setattr(conftest, "bpf_unavailable_reason", lambda: "privileges: not root (uid 1000)")
    monkeypatch.setenv(conftest.REQUIRE_BPF_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="REDIS_TRACER_REQUIRE_BPF=1: privileges: not root"):
        conftest.pytest_runtest_setup(bpf_item())


def test_bpf_available_or_unmarked_runs(monkeypatch):
    monkeypatch.setenv(conftest.REQUIRE_BPF_ENV, "1")
    monkeypatch.setattr(conftest, "bpf_unavailable_reason", lambda: None)
    assert conftest.pytest_runtest_setup(bpf_item()) is None
    monkeypatch.setattr(conftest, "bpf_unavailable_reason", lambda: "no bcc")
    assert conftest.pytest_runtest_setup(bpf_item(marked=False)) is None
