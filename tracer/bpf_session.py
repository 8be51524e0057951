"""Load the probes from probes/ with bcc, attach them to target processes, and drain their records.

The ring buffer is drained on a timer (the probes never wake us per record): `drain()` returns
the raw records gathered since the last call, with FDINFO records inserted for fds classified
on the way, ready for the recorder and the stitcher alike.
"""
from __future__ import annotations

import ctypes
import time
from importlib import resources

from tracer import events, ringbuf
from tracer.errors import BPFUnavailable, TracerError
from tracer.fdinfo import STALE, FdClassifier
from tracer.privileges import require_tracing_privileges
from tracer.target import Target

# One concern per file; each is compiled in only when asked for, because every enabled
# syscall tracepoint puts the whole host on the slower syscall path.
PROBE_FILES = {
    "conn": "conn.c",    # accept/accept4, close, handshake, request arrival
    "io": "io.c",        # read, write, writev of client sockets and the AOF
    "loop": "loop.c",    # epoll_wait/epoll_pwait of the main thread
    "fsync": "fsync.c",  # fsync/fdatasync
    "exec": "exec.c",    # uprobes on call()
    "engine": "engine.c",  # read/write parsed and aggregated in the kernel (instead of io.c)
}
DEFAULT_PROBES = ("conn", "io", "loop", "fsync")
# engine.c first: it defines the hooks conn.c and loop.c call
ENGINE_PROBES = ("engine", "conn", "loop", "fsync")
MATCH_TGIDS_MAX = 16        # up to this many targets, their tgids are compiled into the probes
DRAIN_MAX_RECORDS = 65_536  # per drain() call: bounds the batch in memory; `backlog` says there is more
EXEC_SYMBOL = "call"


def probe_source(names) -> tuple[str, str]:
    """(BPF C text, include dir) for the chosen probe files."""
    root = resources.files("tracer.probes")
    # common.h is pasted, not #included: bcc rewrites map calls (m.lookup()) only in the main text.
    parts = [root.joinpath("common.h").read_text()]
    for name in names:
        parts.append(root.joinpath(PROBE_FILES[name]).read_text())
    return "\n".join(parts), str(root)


class ProbeSession:
    def __init__(self, targets: list[Target], probes=DEFAULT_PROBES, exec_probes: bool = False,
                 capture_max: int = 4096, loop_min_us: int = 1000, ringbuf_pages: int = 16384,
                 extra_cflags=(), on_load=None):
        """extra_cflags: more -D options for the probe text; on_load(bpf): called once the probes are
        loaded and the common maps filled (a probe set's own maps are seeded there)."""
        if capture_max & (capture_max - 1) or not 64 <= capture_max <= 16384:
            raise TracerError(f"--capture-bytes {capture_max} is not a power of two between 64 and 16384")
        self.targets = targets
        self.probes = tuple(probes) + (("exec",) if exec_probes and "exec" not in probes else ())
        self.capture_max = capture_max
        self.loop_min_us = loop_min_us
        self.ringbuf_pages = ringbuf_pages
        self.extra_cflags = list(extra_cflags)
        self.on_load = on_load
        self.classifier = FdClassifier(listen_ports={t.pid: set(t.listen_ports) for t in targets})
        self.bpf = None
        self._pending: list[bytes] = []
        self._classified: set[tuple[int, int]] = set()  # fds whose kernel kind we set from user space
        self.exec_attached = False
        self.records = 0
        self.ring = None            # ringbuf.RingBufReader: the ring read from its mapped memory
        self.ring_mode = ""         # "mmap" | "callback" (bcc's per-record ctypes callback)
        self.ring_note = ""         # why the mmap reader is not used
        self.backlog = False        # the last drain() stopped at max_records: drain again soon

    # -- set-up ---------------------------------------------------------------
    def attach(self) -> None:
        require_tracing_privileges()
        try:
            from bcc import BPF
        except ImportError as err:
            raise BPFUnavailable(f"bcc is not importable ({err})",
                                 "install python3-bpfcc: run scripts/bootstrap") from None
        text, include = probe_source([p for p in self.probes])
        cflags = [f"-I{include}", f"-DCAPTURE_MAX={self.capture_max}",
                  f"-DLOOP_MIN_NS={self.loop_min_us * 1000}ULL", f"-DRINGBUF_PAGES={self.ringbuf_pages}",
                  "-Wno-unused-function", *self.extra_cflags]
        pids = sorted({int(t.pid) for t in self.targets})
        if 0 < len(pids) <= MATCH_TGIDS_MAX:
            # compares instead of a map lookup in every probe (the map is filled all the same)
            match = "||".join(f"(t)=={pid}" for pid in pids)
            cflags.append(f"-DTARGET_TGID_MATCH(t)=({match})")
        try:
            self.bpf = BPF(text=text, cflags=cflags)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BPFUnavailable(f"could not load the BPF probes: {first}",
                                 "run `redis-tracer doctor` to see what is missing") from None
        self._fill_maps()
        if self.on_load is not None:
            self.on_load(self.bpf)
        if "exec" in self.probes:
            self._attach_exec()
        self._open_ring()

    def _open_ring(self) -> None:
        """Read the ring from its mapped pages; bcc's per-record callback if that is not possible."""
        table = self.bpf["events"]
        self.ring, self.ring_note = ringbuf.open_reader(table.map_fd, int(table.max_entries))
        if self.ring is not None:
            self.ring_mode = "mmap"
            return
        self.ring_mode = "callback"
        table.open_ring_buffer(self._on_record)

    def _fill_maps(self) -> None:
        targets = self.bpf["targets"]
        ports = self.bpf["listen_ports"]
        fd_kinds = self.bpf["fd_kinds"]
        for t in self.targets:
            targets[ctypes.c_uint32(t.pid)] = ctypes.c_uint32(t.pid)
            for port in t.listen_ports:
                ports[ctypes.c_uint16(port)] = ctypes.c_uint32(t.pid)
            for fd, kind, info in self.classifier.scan(t.pid):
                fd_kinds[fd_kinds.Key(t.pid, fd)] = ctypes.c_uint8(kind)
                self._classified.add((t.pid, fd))
                if info is not None:
                    info.ts_enter = info.ts_exit = time.monotonic_ns()
                    self._pending.append(events.encode(info))

    def _attach_exec(self) -> None:
        for t in self.targets:
            path = t.exe or f"/proc/{t.pid}/exe"
            try:
                self.bpf.attach_uprobe(name=path, sym=EXEC_SYMBOL, fn_name="exec_start", pid=t.pid)
                self.bpf.attach_uretprobe(name=path, sym=EXEC_SYMBOL, fn_name="exec_end", pid=t.pid)
            except Exception as err:
                raise TracerError(f"cannot attach uprobes to {EXEC_SYMBOL}() in {path}: {err}",
                                  "drop --exec-probes, or use a redis-server binary with symbols") from None
        self.exec_attached = True

    def describe(self) -> str:
        pids = ",".join(str(t.pid) for t in self.targets)
        mode = "syscalls+uprobes" if self.exec_attached else "syscalls"
        kib = self.ringbuf_pages * 4
        size = f"{kib // 1024}MiB" if kib >= 1024 else f"{kib}KiB"
        ring = f" ring {size}/{self.ring_mode}" if self.ring_mode else ""
        return f"pid {pids} probes {'+'.join(self.probes)} mode {mode} capture {self.capture_max}B{ring}"

    # -- draining ---------------------------------------------------------------
    def _on_record(self, _ctx, data, size) -> None:
        self._pending.append(ctypes.string_at(data, size))

    def drain(self, max_records: int = DRAIN_MAX_RECORDS) -> list[bytes]:
        """The records the probes produced since the last call, in ring-buffer order: all of them,
        or the first max_records (then `backlog` is True and the rest wait for the next call)."""
        batch, self._pending = self._pending, []
        if self.ring is not None:
            self.backlog = self.ring.drain(batch, max_records) >= max_records
        else:
            self.bpf.ring_buffer_consume()
            batch += self._pending
            self._pending = []
        if not batch:
            return batch
        out = []
        append = out.append
        fd_kinds = self.bpf["fd_kinds"]
        unknown = events.RTF_UNKNOWN_FD
        close = events.CLOSE
        # (tgid, fd) -> keep? for the unknown-fd records of this batch: under load many records of
        # one fd are made before user space classifies it, and classifying reads /proc (the fd
        # link, /proc/net/tcp): once per fd and batch, not once per record
        decided: dict = {}
        for raw in batch:
            # flags sits at byte 54 of the header, kind at 52: checked without decoding the record
            if raw[54] & unknown and len(raw) >= events.HEADER_SIZE:
                tgid = int.from_bytes(raw[40:44], "little")
                fd = int.from_bytes(raw[48:52], "little", signed=True)
                keep = decided.get((tgid, fd))
                if keep is None:
                    keep = decided[(tgid, fd)] = self._classify_unknown(tgid, fd, raw, fd_kinds, append)
                if keep:
                    append(raw)
                continue
            if raw[52] == close:
                tgid = int.from_bytes(raw[40:44], "little")
                fd = int.from_bytes(raw[48:52], "little", signed=True)
                self.classifier.forget(tgid, fd)
                self._classified.discard((tgid, fd))
                decided.pop((tgid, fd), None)
            append(raw)
        self.records += len(out)
        return out

    def _classify_unknown(self, tgid: int, fd: int, raw: bytes, fd_kinds, append) -> bool:
        """A record for an fd the kernel did not know: classify the fd from /proc, tell the kernel,
        append an FDINFO record when there is news; True when the record is to be kept."""
        key = fd_kinds.Key(tgid, fd)
        if (tgid, fd) not in self._classified and key in fd_kinds:
            # accept() marked this fd number after the record was made: the record is
            # from an earlier, short-lived file with the same number (e.g. /proc/self/stat).
            return False
        kind, info = self.classifier.classify(tgid, fd)
        if kind == STALE:
            return False
        fd_kinds[key] = ctypes.c_uint8(kind)
        self._classified.add((tgid, fd))
        if info is not None:
            info.ts_enter = info.ts_exit = int.from_bytes(raw[0:8], "little")
            append(events.encode(info))
        return kind != events.FD_IGNORE

    def ring_mark(self):
        """The producer's position now (None without the mapped reader): see ring_passed()."""
        return self.ring.producer_pos if self.ring is not None else None

    def ring_passed(self, mark) -> bool:
        """True once every record written before ring_mark() returned `mark` has been drained."""
        return mark is None or self.ring is None or self.ring.consumer_pos >= mark

    def counters(self) -> dict:
        table = self.bpf["counters"]
        names = {events.CNT_LOST: "lost", events.CNT_LOOP_BUSY_NS: "busy_ns",
                 events.CNT_LOOP_IDLE_NS: "idle_ns", events.CNT_LOOPS: "loops"}
        out = {}
        for idx, name in names.items():
            out[name] = sum(int(v) for v in table[ctypes.c_int(idx)])
        return out

    def counters_record(self) -> bytes:
        """The kernel counters as a COUNTERS record, to be fed and recorded with the stream."""
        c = self.counters()
        return events.encode(events.Event(kind=events.COUNTERS, ts_enter=time.monotonic_ns(),
                                          ts_exit=time.monotonic_ns(), ret=c["lost"], aux_ts=c["busy_ns"],
                                          aux_ts2=c["idle_ns"], tgid=self.targets[0].pid))

    def targets_alive(self) -> bool:
        return all(_process_alive(t.pid) for t in self.targets)

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


def _process_alive(pid: int) -> bool:
    """False once the process is gone or a zombie (killed, not yet reaped by its parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:][:1]
    return state not in (b"Z", b"X", b"")
