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
    def __init__(self, *args: str, attach_timeout: float = 60.0):
        self.args = [sys.executable, "-m", "tracer", *args]
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.stderr_lines: list[str] = []
        self.attached = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self.attached.wait(attach_timeout):
            self.proc.kill()
            raise AssertionError(f"tracer never attached: {' '.join(self.args)}: {self.stderr_text()}")

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if line.startswith("attached:"):
                self.attached.set()
        self.attached.set()

    def stderr_text(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, sig=signal.SIGINT, timeout: float = 30.0) -> tuple[int, str]:
        time.sleep(0.3)  # let the last replies reach the ring buffer before asking it to stop
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=timeout)
        self._reader.join(timeout=5)
        return self.proc.returncode, out

    def wait(self, timeout: float = 60.0) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        self._reader.join(timeout=5)
        return self.proc.returncode, out


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]
