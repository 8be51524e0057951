"""`redis-tracer demo` in a real pseudo-terminal (tmux), read off the screen like a person would."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.bpf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = 10
TIMEOUT = 120  # attach (BPF compile) + duration + cleanup, generously


def tmux(*args, check=True) -> str:
    return subprocess.run(["tmux", *args], check=check, capture_output=True, text=True, timeout=20).stdout


def is_redis_server(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().startswith("redis-server")
    except OSError:
        return False


@pytest.fixture
def tmux_session():
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    name = f"redis-tracer-demo-test-{os.getpid()}"
    yield name
    tmux("kill-session", "-t", name, check=False)


def test_demo_dashboard_in_a_terminal(tmux_session, tmp_path):
    exit_file = tmp_path / "exit-code"
    command = (f"cd {shlex.quote(REPO)} && {shlex.quote(sys.executable)} -m tracer demo --duration {DURATION}; "
               f"echo $? > {shlex.quote(str(exit_file))}; sleep 600")
    tmux("new-session", "-d", "-s", tmux_session, "-x", "140", "-y", "45", command)

    screens: list[str] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not exit_file.exists():
        screens.append(tmux("capture-pane", "-p", "-t", tmux_session, check=False))
        time.sleep(0.5)
    # after the run: the normal screen with its scrollback (the dashboard used the alternate screen)
    final = tmux("capture-pane", "-p", "-J", "-S", "-", "-t", tmux_session, check=False)
    everything = "\n".join(screens + [final])
    assert exit_file.exists(), f"demo still running after {TIMEOUT}s:\n{screens[-1] if screens else final}"
    assert exit_file.read_text().strip() == "0", final
    assert "Traceback" not in everything, everything

    # the live dashboard showed requests: a GET row with a count > 0
    dashboards = [s for s in screens if "commands" in s and "stalls" in s]
    assert dashboards, f"the dashboard never appeared; last screen:\n{screens[-1] if screens else final}"
    gets = [int(m.group(1).replace(",", "")) for s in dashboards for m in re.finditer(r"│ GET\s+([\d,]+)\s", s)]
    assert gets and max(gets) > 0, dashboards[-1]

    # the BigKey stall: DEL of the big hash, in the stalls panel or the final summary
    assert "DEL demo:bighash" in everything, final
    assert re.search(r"\d+\.\s+[\d.]+m?s\s+DEL demo:bighash", final), final  # and in the diagnosis
    assert "victims:" in final and "advice:" in final

    # the cache thread's stampede and inventory race: on the live panel and in the diagnosis, with advice
    assert any("cache patterns" in s and "stampede" in s for s in dashboards), dashboards[-1]
    assert re.search(r"- stampede: 8 clients got nil for demo:product:\d+", final), final
    assert "- race: " in final and "demo:stock:1" in final, final
    assert "advice: let one caller rebuild the key" in final and "a Lua script" in final

    # everything the demo started is gone
    m = re.search(r"demo: redis-server pid (\d+) on 127\.0\.0\.1:(\d+) \(data in (\S+)\)", final)
    assert m, final
    pid, data_dir = int(m.group(1)), m.group(3)
    assert f"demo: stopped redis-server pid {pid}" in final
    assert not is_redis_server(pid), f"redis-server pid {pid} is still running"
    assert not os.path.exists(data_dir), f"{data_dir} was left behind"
