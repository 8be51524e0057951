"""Every tracing command, run without the capabilities, refuses with one line naming them: as the
`nobody` user, and as root in a capability-stripped process (a container's situation). Trace files
of root stay unreadable to others. Needs root to switch users (setpriv), not BPF."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tracer_proc import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to drop privileges")

AS_NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
ROOT_NO_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def run_as(prefix, *args):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([*prefix, sys.executable, "-m", "tracer", *args], cwd=REPO, capture_output=True,
                          timeout=120, env=env)


def commands(port: int, out: str):
    p = str(port)
    return [["trace", "--port", p], ["trace", "--json", "--port", p, "--duration", "1"],
            ["record", "--port", p, "-o", out], ["live", "--port", p, "--duration", "1"],
            ["diagnose", "--port", p, "--duration", "1"], ["count", "--port", p], ["demo", "--duration", "1"],
            ["trace"], ["count", "--all"]]


@pytest.mark.parametrize("who", ["nobody", "root-without-capabilities"])
def test_tracing_commands_refuse_with_one_line_naming_the_capabilities(redis_server, tmp_path, who):
    prefix = AS_NOBODY if who == "nobody" else ROOT_NO_CAPS
    out = str(tmp_path / "never.rtrace")
    for args in commands(redis_server.port, out):
        proc = run_as(prefix, *args)
        err = proc.stderr.decode()
        lines = err.strip().splitlines()
        assert proc.returncode == 77, (args, err)
        assert proc.stdout == b"" and "Traceback" not in err, (args, err)
        assert len(lines) == 1, (args, err)
        assert lines[0].startswith("redis-tracer: tracing needs root or CAP_BPF+CAP_PERFMON: "), lines[0]
        assert "lacks CAP_BPF+CAP_PERFMON" in lines[0]
        assert ("not root (uid 65534)" if who == "nobody" else "running as root") in lines[0]
        assert f"sudo redis-tracer {args[0]}" in lines[0]
        assert not os.path.exists(out)
    assert redis_server.proc.poll() is None


def test_root_trace_files_are_unreadable_to_others(tmp_path):
    from eventstream import Stream, cmd

    from tracer.tracefile.recording import TraceWriter

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(shared, 0o777)                      # even in a world-writable, world-readable directory
    path = shared / "root.rtrace"
    s = Stream()
    s.accept(7, 1)
    s.read(7, cmd("GET", "k"))
    with TraceWriter(path, {}) as w:
        w.write_many(s.raw())
    st = os.stat(path)
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == 0
    for args in (["report", str(path)], ["report", str(path), "--json"], ["replay", str(path), "--max"],
                 ["export", str(path), "-o", str(shared / "x.json")]):
        proc = run_as(AS_NOBODY, *args)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("redis-tracer: cannot "), (args, err)
        if args[0] != "export":   # export may first fail to create its output in root's tmp dir
            assert lines == [f"redis-tracer: cannot read {path}: permission denied (fix: trace files are "
                             "mode 0600: read it as the user who recorded it, or as root)"]
