"""Samples each target's INFO while tracing (kernel/info.py: the fields and their record).

One connection per target, opened before the probes attach so that the attach marks its fd as ignored:
the tracer's own INFO never shows up as requests in its trace. A background thread asks at attach and
then every `every_s`; the drain loop takes the records made since (`take`), so a slow or unreachable
Redis never blocks it. A timeout or an error ends that target's sampling quietly; the commands sent
(INFO <section>) are never answered with an error reply, so the target's errorstats stay as they were.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import deque

from tracer.kernel.fdinfo import server_fd_of
from tracer.kernel.info import SECTIONS, info_record, parse_info
from tracer.kernel.redis_client import RespError, redis_connection
from tracer.options import INFO_TIMEOUT_S

RECORDS_KEPT = 1024     # records not yet taken (a drain loop that stalls loses the oldest samples)


class InfoSampler:
    def __init__(self, targets: list, credentials, every_s: float, timeout_s: float = INFO_TIMEOUT_S):
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.records: deque = deque(maxlen=RECORDS_KEPT)
        self._stop = threading.Event()
        self._thread = None
        self._stack = contextlib.ExitStack()
        self._calls = []            # (tgid, call) of each target still sampled
        self.server_fds: set = set()    # (tgid, fd): the targets' ends of our connections
        for t in targets if every_s > 0 else ():
            # a target that did not answer the query before attaching (auth, protected mode) is not
            # asked again: that would add to its error replies
            endpoint = t.endpoint(credentials)
            if endpoint is None or t.info.get("error"):
                continue
            try:
                call = self._stack.enter_context(redis_connection(endpoint, credentials, timeout=timeout_s))
            except (OSError, ValueError, RespError):
                continue        # no INFO for this target: tracing goes on without it
            # the sample at attach; its answer also means Redis has accepted us (its fd exists)
            fd = server_fd_of(t.pid, call.sock) if self._sample(t.pid, call) else None
            if fd is not None:  # else it cannot be kept out of the trace: not sampled
                self.server_fds.add((t.pid, fd))
                self._calls.append((t.pid, call))

    def start(self) -> None:
        if self._calls:
            self._thread = threading.Thread(target=self._run, name="info-sampler", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while self._calls and not self._stop.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        """One INFO of each target still sampled, appended to records; a target that fails is dropped."""
        self._calls = [(tgid, call) for tgid, call in self._calls if self._sample(tgid, call)]

    def _sample(self, tgid: int, call) -> bool:
        try:
            text = "".join(str(call("INFO", section) or "") for section in SECTIONS)
        except (OSError, ValueError, RespError):
            return False
        self.records.append(info_record(parse_info(text), tgid, time.monotonic_ns()))
        return True

    def take(self) -> list[bytes]:
        """The records made since the last take (the drain loop feeds them with the stream)."""
        out = []
        records = self.records
        while records:
            out.append(records.popleft())
        return out

    def stop(self) -> list[bytes]:
        """End sampling: one last sample (so the end of the trace is bracketed), then the records left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s * len(SECTIONS) + 1)     # at most one sample in progress
            if not self._thread.is_alive():
                self.sample()
        self._stack.close()
        return self.take()
