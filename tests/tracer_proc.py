"""Run a redis-tracer command as a child process, the way an operator would, and wait for its probes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TracerProcess:
    def __init__(self, *args: str, attach_timeout: float = 60.0, env: dict | None = None, prefix: tuple = ()):
        """prefix: a command the tracer runs under (setpriv ... for the non-root capability path)."""
        self.args = [*prefix, sys.executable, "-m", "tracer", *args]
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.stderr_lines: list[str] = []
        self.stdout_parts: list[str] = []
        self.attached = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        # stdout has its own reader: communicate() would also read stderr and race the thread above
        self._out_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._out_reader.start()
        if not self.attached.wait(attach_timeout):
            self.proc.kill()
            raise AssertionError(f"tracer never attached: {' '.join(self.args)}: {self.stderr_text()}")

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if line.startswith("attached:"):
                self.attached.set()
        self.attached.set()

    def _read_stdout(self):
        while True:
            chunk = self.proc.stdout.read(65536)
            if not chunk:
                return
            self.stdout_parts.append(chunk)

    def _finish(self, timeout: float) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
        finally:
            self._out_reader.join(timeout=10)
            self._reader.join(timeout=10)
        return self.proc.returncode, "".join(self.stdout_parts)

    def stderr_text(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, sig=signal.SIGINT, timeout: float = 30.0) -> tuple[int, str]:
        time.sleep(0.3)  # let the last replies reach the ring buffer before asking it to stop
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self._finish(timeout)

    def wait(self, timeout: float = 60.0) -> tuple[int, str]:
        return self._finish(timeout)


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def report_of(trace) -> dict:
    """`redis-tracer report TRACE --json`, parsed; the command must succeed."""
    proc = subprocess.run([sys.executable, "-m", "tracer", "report", str(trace), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
