"""Attaching the next probe session while the current one keeps counting.

Compiling the probes takes seconds (2-12 s measured on a busy 2-core machine). When the agent must
attach again (a new redis-server with --all, a followed port back under a new pid), the next session
is compiled and its maps filled in a thread while the running session goes on draining; only its
programs' attach (a fraction of a second) waits for the running session to be closed, so a request
is never counted by both, and the servers already followed lose only that fraction of a second.
"""
from __future__ import annotations

import threading

from tracer.runtime import runner

CANCEL_JOIN_S = 60.0        # a compile cannot be interrupted: how long a cancel waits for it


class HandoverCancelled(Exception):
    """Raised inside the preparing thread's on_load when the handover is called off (the attach then
    closes what it made)."""


class NextSession:
    """runner.attach of `targets` in a thread, held just before its programs attach."""

    def __init__(self, trace, targets: list, reason: str):
        self.targets = targets
        self.reason = reason                # why the agent attaches again, for its log line
        self.ready = threading.Event()      # compiled and its maps filled (or failed): switch now
        self._go = threading.Event()
        self._cancelled = False
        self.session = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(trace,), name="next-session", daemon=True)
        self._thread.start()

    def _gate(self, session) -> None:
        seed = session.on_load

        def gated(bpf):
            if seed is not None:
                seed(bpf)
            self.ready.set()
            self._go.wait()
            if self._cancelled:
                raise HandoverCancelled()
        session.on_load = gated

    def _run(self, trace) -> None:
        try:
            self.session = runner.attach(trace, self.targets, on_session=self._gate)
        except BaseException as err:    # handed to the main thread by take()
            self.error = err
        finally:
            self.ready.set()

    def take(self):
        """Attach the programs now (the running session is closed) and return the session; raises what
        the preparation raised."""
        self._go.set()
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.session

    def cancel(self) -> None:
        self._cancelled = True
        self._go.set()
        self._thread.join(CANCEL_JOIN_S)
        if self.session is not None:
            self.session.close()
