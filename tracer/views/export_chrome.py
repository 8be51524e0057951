"""Chrome Trace Event Format (opens in ui.perfetto.dev and chrome://tracing), written as a stream.

Tracks: one per Redis thread (main, IO threads, bio/AOF) and one per client connection. A request
is a slice on its connection's track with its phases nested inside; its execution is also a slice
on the thread that ran it; fsyncs sit on their thread; stalls are marked slices on the main thread,
with flow arrows from each stall to the requests it delayed (`blocked_by`).
"""
from __future__ import annotations

import json

from tracer.schema import StallResult

CONN_TID_BASE = 1_000_000  # connection tracks get synthetic tids above real ones


class ChromeTraceWriter:
    def __init__(self, out, first_ts: int = 0):
        self.out = out
        self.first_ts = first_ts
        self.count = 0
        self.named: set = set()
        self.flows = 0
        out.write('{"displayTimeUnit":"ms","traceEvents":[\n')

    def _us(self, ns: int) -> float:
        return round((ns - self.first_ts) / 1000.0, 3)

    def _emit(self, event: dict) -> None:
        if self.count:
            self.out.write(",\n")
        self.out.write(json.dumps(event, separators=(",", ":")))
        self.count += 1

    def _name_track(self, pid: int, tid: int, name: str) -> None:
        if (pid, tid) in self.named:
            return
        self.named.add((pid, tid))
        self._emit({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
        if tid == pid:
            self._emit({"ph": "M", "name": "process_name", "pid": pid, "tid": tid,
                        "args": {"name": f"redis-server {pid}"}})

    def _slice(self, pid, tid, name, start, end, cat, args=None) -> None:
        if not start or not end or end < start:
            return
        ev = {"ph": "X", "name": name, "cat": cat, "pid": pid, "tid": tid, "ts": self._us(start),
              "dur": round((end - start) / 1000.0, 3)}
        if args:
            ev["args"] = args
        self._emit(ev)

    def thread_name(self, pid: int, tid: int) -> str:
        return "main thread" if tid == pid else f"thread {tid}"

    def request(self, req) -> None:
        pid = req.tgid
        self._name_track(pid, pid, "main thread")
        tid = CONN_TID_BASE + req.conn_id
        self._name_track(pid, tid, f"client {req.client or 'fd ' + str(req.fd)}")
        label = req.command + (f" {req.key}" if req.key else "")
        start, end = req.start_ts, req.reply_end_ts or req.read_end_ts
        self._slice(pid, tid, label, start, end, "request",
                    {"request_bytes": req.request_bytes, "reply_bytes": req.reply_bytes,
                     "reply_type": req.reply_type, "exec_source": req.exec_source})
        wake = req.wake_ts if req.arrival_ts and req.arrival_ts <= req.wake_ts <= req.read_start_ts else 0
        if req.arrival_ts:
            self._slice(pid, tid, "socket queue", req.arrival_ts, wake or req.read_start_ts, "phase")
        self._slice(pid, tid, "read", req.read_start_ts, req.read_end_ts, "phase")
        self._slice(pid, tid, "exec", req.exec_start_ts, req.exec_end_ts, "phase")
        self._slice(pid, tid, "reply write", req.reply_start_ts, req.reply_end_ts, "phase")
        if req.exec_start_ts:
            self._name_track(pid, req.tgid, "main thread")
            self._slice(pid, req.tgid, label, req.exec_start_ts, req.exec_end_ts, "exec")
        if req.thread and req.thread != pid:
            self._name_track(pid, req.thread, f"io thread {req.thread}")
            self._slice(pid, req.thread, f"read {label}", req.read_start_ts, req.read_end_ts, "io")
        if req.reply_thread and req.reply_thread != pid:
            self._name_track(pid, req.reply_thread, f"io thread {req.reply_thread}")
            self._slice(pid, req.reply_thread, f"write {label}", req.reply_start_ts, req.reply_end_ts, "io")

    def sync(self, sync) -> None:
        name = "main thread" if sync.main_thread else f"bio thread {sync.tid}"
        self._name_track(sync.tgid, sync.tid, name)
        self._slice(sync.tgid, sync.tid, sync.op, sync.start_ts, sync.end_ts, "aof", {"bytes": sync.nbytes})

    def stall(self, pid: int, stall: StallResult, first_ts: int) -> int:
        """The stall's slice on the main thread; returns where it starts (ns) for the flow arrows."""
        start = first_ts + int(stall.start_s * 1e9)
        end = start + int(stall.duration_ms * 1e6)
        self._name_track(pid, pid, "main thread")
        label = f"STALL {stall.command}" + (f" {stall.key}" if stall.key else "")
        self._slice(pid, pid, label, start, end, "stall",
                    {"class": stall.class_, "victims": stall.victims,
                     "victim_added_ms": stall.victim_added_ms, "advice": stall.advice})
        return start

    def flow(self, pid: int, stall_id: int, stall_start: int, req) -> None:
        """An arrow from a stall's slice on the main thread (its culprit) to a request it delayed."""
        start = req.start_ts
        if not start or not req.reply_end_ts:
            return
        self.flows += 1
        common = {"name": f"stall {stall_id}", "cat": "blocked_by", "id": self.flows}
        self._emit({"ph": "s", **common, "pid": pid, "tid": pid, "ts": self._us(stall_start + 1000)})
        self._emit({"ph": "f", "bp": "e", **common, "pid": req.tgid, "tid": CONN_TID_BASE + req.conn_id,
                    "ts": self._us(max(start, min(stall_start, req.reply_end_ts)))})

    def close(self) -> None:
        self.out.write("\n]}\n")
