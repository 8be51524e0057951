"""Load the probes from probes/ with bcc, attach them to target processes, and drain their records.

The ring buffer is drained on a timer (the probes never wake us per record): `drain()` returns
the raw records gathered since the last call, with FDINFO records inserted for fds classified
on the way, ready for the recorder and the stitcher alike.
"""
from __future__ import annotations

import contextlib
import ctypes
import heapq
import time
from dataclasses import dataclass
from importlib import resources
from typing import Callable

from tracer.errors import BPFUnavailable, TracerError
from tracer.kernel import events, ringbuf
from tracer.kernel.fdinfo import FdClassifier, SocketTables, unix_client_info
from tracer.kernel.unixpeer import describe_peer, peer_pid, unix_peer_name
from tracer.kernel.privileges import require_tracing_privileges
from tracer.kernel.stacks import SamplingConfig, StackProfiler
from tracer.kernel.target import Target
from tracer.options import CAPTURE_BYTES, RINGBUF_PAGES, check_capture_bytes

# One concern per file; each is compiled in only when asked for, because every enabled
# syscall tracepoint puts the whole host on the slower syscall path.
PROBE_FILES = {
    "conn": "conn.c",    # accept/accept4, close, handshake, request arrival
    "fds": "fds.c",      # files, pipes, eventfds the target opens: marked so they are never decoded
    "io": "io.c",        # read, write, writev of client sockets and the AOF
    "loop": "loop.c",    # epoll_wait/epoll_pwait of the main thread
    "fsync": "fsync.c",  # fsync/fdatasync
    "exec": "exec.c",    # uprobes on call()
    "engine": "engine.c",  # read/write parsed and aggregated in the kernel (instead of io.c)
    "sched": "sched.c",  # --why: the main thread off the CPU, who ran instead, forks, page faults
    "unixconn": "unixconn.c",  # unix-socket clients named at connect(); before conn.c (its hooks)
    "sample": "sample.c",  # cpu-clock samples (unless --no-why) of the main thread deep in a busy span (after loop.c)
}
# is the main thread in epoll_wait, in either loop.c bookkeeping: pasted before sched.c and loop.c
MAINTHREAD_FILE = "mainthread.c"
DEFAULT_PROBES = ("conn", "fds", "io", "loop", "fsync")
# engine.c first: it defines the hooks conn.c and loop.c call
ENGINE_PROBES = ("engine", "conn", "fds", "loop", "fsync")


def with_sched(probes) -> tuple:
    """The probe set with sched.c, pasted before loop.c (it defines the hooks loop.c calls)."""
    probes = tuple(p for p in probes if p != "sched")
    at = probes.index("loop") if "loop" in probes else len(probes)
    return probes[:at] + ("sched",) + probes[at:]
RESCUE_FRACTION = 64        # the rescue ring is 1/64 of events (at least RESCUE_PAGES_MIN pages: 1 MiB)
RESCUE_PAGES_MIN = 256
MATCH_TGIDS_MAX = 16        # up to this many targets, their tgids are compiled into the probes
DRAIN_MAX_RECORDS = 65_536  # per drain() call: bounds the batch in memory; `backlog` says there is more
EXEC_SYMBOL = "call"
UNIX_SLOTS, UNIX_QUEUE = 4, 1024   # probes/unixconn.c: targets whose unix clients are named at connect()
PROGRESS_AFTER_S = 1.0      # attach: fd discovery reports its progress once it has taken this long
# legacy syscalls (x86): fds.c probes them when the kernel has them (musl's open() and pipe() use them)
OPTIONAL_SYSCALLS = {"HAVE_SYS_OPEN": ("sys_exit_open", "sys_exit_creat"),
                     "HAVE_SYS_PIPE": ("sys_enter_pipe", "sys_exit_pipe"),
                     "HAVE_SYS_CLONE3": ("sys_enter_clone3",), "HAVE_SYS_FORK": ("sys_enter_fork",)}
# sched.c's tracepoints: without the first ones there is no sched probe set (--why does nothing, said
# once); the page-fault count is left out where the kernel lacks its tracepoint
SCHED_REQUIRED = (("sched", "sched_switch"), ("sched", "sched_wakeup"), ("sched", "sched_process_fork"),
                  ("syscalls", "sys_enter_clone"))
SCHED_OPTIONAL = {"HAVE_PAGE_FAULT_USER": ("exceptions", "page_fault_user")}
# enum rt_counter -> the name counters() reports it under
COUNTER_NAMES = {events.CNT_LOST: "lost", events.CNT_LOOP_BUSY_NS: "busy_ns", events.CNT_LOOP_IDLE_NS: "idle_ns",
                 events.CNT_LOOPS: "loops", events.CNT_REFUSED_FULL: "refused_full",
                 events.CNT_REFUSED_ROOM: "refused_room", events.CNT_RESCUED: "rescued",
                 events.CNT_REFUSED_AVAIL_MAX: "refused_avail_max", events.CNT_REFUSED_NS_MAX: "refused_ns_max",
                 events.CNT_REFUSED_CONS_POS: "refused_cons_pos", events.CNT_REFUSED_PROD_POS: "refused_prod_pos"}
COUNTER_MAXIMA = {events.CNT_REFUSED_AVAIL_MAX, events.CNT_REFUSED_NS_MAX, events.CNT_REFUSED_CONS_POS,
                  events.CNT_REFUSED_PROD_POS}  # per-CPU maxima: the largest CPU's, not the sum


def probe_mode(exec_attached: bool) -> str:
    """How requests are timed: syscalls only, or with uprobes on call() for exact execution time."""
    return "syscalls+uprobes" if exec_attached else "syscalls"


def probe_source(names) -> tuple[str, str]:
    """(BPF C text, include dir) for the chosen probe files."""
    root = resources.files("tracer.probes")
    # common.h is pasted, not #included: bcc rewrites map calls (m.lookup()) only in the main text.
    parts = [root.joinpath("common.h").read_text()]
    pasted_mainthread = False
    for name in names:
        if name in ("sched", "loop") and not pasted_mainthread:     # what both of them ask
            parts.append(root.joinpath(MAINTHREAD_FILE).read_text())
            pasted_mainthread = True
        parts.append(root.joinpath(PROBE_FILES[name]).read_text())
    return "\n".join(parts), str(root)


def _deferred_attach(bpf_class):
    """bcc loads and attaches every TRACEPOINT_PROBE as soon as it has compiled them. This subclass
    waits for attach_probes(): the session marks the fds the target already holds first, so no
    probe ever reports an fd of the target before it is classified (nothing to guess later about
    which holder of an fd number a record belonged to). With a bcc that attaches some other way,
    the probes attach at load time and attach_probes() does nothing."""

    class DeferredAttachBPF(bpf_class):
        def _trace_autoload(self):
            self.autoload_deferred = True

        def attach_probes(self):
            if getattr(self, "autoload_deferred", False):
                self.autoload_deferred = False
                bpf_class._trace_autoload(self)

    return DeferredAttachBPF


@dataclass
class AttachTimes:
    """Where attaching spent its time (seconds), for the `attached:` line and benchmarks."""

    compile_s: float = 0.0   # clang + creating the maps
    scan_s: float = 0.0      # /proc discovery of the fds the targets hold, map updates
    probes_s: float = 0.0    # verifying and attaching the programs
    fds: int = 0             # fds classified at attach

    def describe(self) -> str:
        return (f"{self.fds} fds classified in {self.scan_s:.2f} s, probes compiled in {self.compile_s:.1f} s"
                f" and attached in {self.probes_s:.2f} s")


class ProbeSession:
    def __init__(self, targets: list[Target], probes=DEFAULT_PROBES, exec_probes: bool = False,
                 capture_max: int = CAPTURE_BYTES, loop_min_us: int = 1000, ringbuf_pages: int = RINGBUF_PAGES,
                 extra_cflags=(), on_load=None, sampling: SamplingConfig | None = None, why: bool = False):
        """extra_cflags: more -D options for the probe text; on_load(bpf): called once the probes are
        loaded and the common maps filled (a probe set's own maps are seeded there); sampling: on-CPU
        stacks of stalls (kernel/stacks.py), None: off; why: the sched probes too (probes/sched.c:
        off-CPU time, who ran instead, forks)."""
        check_capture_bytes(capture_max)
        self.targets = targets
        probes = with_sched(probes) if why else tuple(probes)
        self.probes = tuple(probes) + (("exec",) if exec_probes and "exec" not in probes else ())
        if "conn" in self.probes and any(getattr(t, "unix_socket", None) for t in targets):
            at = self.probes.index("conn")      # its hooks must be defined before conn.c
            self.probes = self.probes[:at] + ("unixconn",) + self.probes[at:]
        self.annotator = None       # kernel/sched.py: completes sched records at the drain
        self.sched_note = ""        # why --why has no sched probes here (said in describe())
        self.sampling = sampling
        self.profiler = None        # kernel/stacks.StackProfiler once attached with sampling
        self.sampling_note = ""     # why sampling was asked for and is off
        if sampling is not None:
            self.probes += ("sample",)
            extra_cflags = tuple(extra_cflags) + tuple(sampling.cflags())
        self.capture_max = capture_max
        self.loop_min_us = loop_min_us
        self.ringbuf_pages = ringbuf_pages
        self.extra_cflags = list(extra_cflags)
        self.on_load = on_load
        self.classifier = FdClassifier(listen_ports={t.pid: set(t.listen_ports) for t in targets})
        self.bpf = None
        self._pending: list[bytes] = []
        self.times = AttachTimes()
        self.dropped_unknown = 0    # records of an fd number's earlier holder, dropped (see _classify_unknown)
        self.unix_queue_restarts = 0    # unix accepts whose connect() pairing SO_PEERCRED contradicted
        self.unix_slots: dict[int, int] = {}    # tgid -> its queue in probes/unixconn.c
        self.exec_attached = False
        self.records = 0
        self.ring = None            # ringbuf.RingBufReader: the ring read from its mapped memory
        self.rescue = None          # the same for the rescue ring (records `events` refused)
        self._rescued: list[bytes] = []  # rescue ring records from bcc's callback
        self.ring_mode = ""         # "mmap" | "callback" (bcc's per-record ctypes callback)
        self.ring_note = ""         # why the mmap reader is not used
        self.backlog = False        # the last drain() stopped at max_records: drain again soon
        self.ignore_fds: set = set()    # (tgid, fd): the tracer's own connections, marked ignore at attach
        self.info_sampler = None        # runtime/info_sampler.py, set by runner.attach (drained beside the ring)

    # -- set-up ---------------------------------------------------------------
    def program(self, bpf_class=None) -> tuple[str, list[str]]:
        """(BPF C text, compile flags) exactly as attach() hands them to bcc (`--ebpf` prints them).
        bpf_class: bcc's BPF, to ask which optional syscall tracepoints this kernel has."""
        text, include = probe_source([p for p in self.probes])
        cflags = [f"-I{include}", f"-DCAPTURE_MAX={self.capture_max}",
                  f"-DLOOP_MIN_NS={self.loop_min_us * 1000}ULL", f"-DRINGBUF_PAGES={self.ringbuf_pages}",
                  f"-DRESCUE_PAGES={max(RESCUE_PAGES_MIN, self.ringbuf_pages // RESCUE_FRACTION)}",
                  "-Wno-unused-function", *self.extra_cflags]
        if bpf_class is not None:
            cflags += [f"-D{flag}" for flag, tps in OPTIONAL_SYSCALLS.items()
                       if all(bpf_class.tracepoint_exists("syscalls", tp) for tp in tps)]
            cflags += [f"-D{flag}" for flag, (cat, tp) in SCHED_OPTIONAL.items()
                       if bpf_class.tracepoint_exists(cat, tp)]
        pids = sorted({int(t.pid) for t in self.targets})
        if 0 < len(pids) <= MATCH_TGIDS_MAX:
            # compares instead of a map lookup in every probe (the map is filled all the same)
            match = "||".join(f"(t)=={pid}" for pid in pids)
            cflags.append(f"-DTARGET_TGID_MATCH(t)=({match})")
        return text, cflags

    def attach(self, progress: Callable[[str], None] | None = None) -> None:
        """Compile the probes, mark every fd the targets hold, then attach. `progress(message)` hears
        about fd discovery when it takes longer than PROGRESS_AFTER_S."""
        require_tracing_privileges()
        try:
            from bcc import BPF
        except ImportError as err:
            raise BPFUnavailable(f"bcc is not importable ({err})",
                                 "install python3-bpfcc: run scripts/bootstrap") from None
        if "sched" in self.probes:
            missing = [f"{c}:{n}" for c, n in SCHED_REQUIRED if not BPF.tracepoint_exists(c, n)]
            if missing:
                self.probes = tuple(p for p in self.probes if p != "sched")
                self.sched_note = f"--why: no sched probes, this kernel lacks {', '.join(missing)}"
        text, cflags = self.program(BPF)
        started = time.monotonic()
        with _load_errors():
            self.bpf = _deferred_attach(BPF)(text=text, cflags=cflags)
        self.times.compile_s = time.monotonic() - started
        _return_freed_heap()
        ring_ref = self.bpf["ring_ref"]
        ring_ref[ctypes.c_int(0)] = ctypes.c_int(self.bpf["events"].map_fd)
        self._fill_maps(progress)
        if self.on_load is not None:
            self.on_load(self.bpf)
        started = time.monotonic()
        with _load_errors():
            self.bpf.attach_probes()
        self.times.probes_s = time.monotonic() - started
        if "exec" in self.probes:
            self._attach_exec()
        if "sched" in self.probes:
            from tracer.kernel.sched import SchedAnnotator

            self.annotator = SchedAnnotator(self.bpf)
        if self.sampling is not None:
            profiler = StackProfiler(self.sampling, ksym=BPF.ksym)
            try:
                profiler.attach(self.bpf, sorted({int(t.pid) for t in self.targets}))
                self.profiler = profiler
            except Exception as err:    # no perf events here (a container, perf_event_paranoid): trace without
                note = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                self.sampling_note = f"no on-CPU samples ({note}); stalls are explained without them"
                if progress is not None:
                    progress(self.sampling_note)
        self._open_ring()

    def _open_ring(self) -> None:
        """Read the rings from their mapped pages; bcc's per-record callback if that is not possible."""
        table, rescue = self.bpf["events"], self.bpf["rescue"]
        self.ring, self.ring_note = ringbuf.open_reader(table.map_fd, int(table.max_entries))
        if self.ring is not None:
            self.rescue, note = ringbuf.open_reader(rescue.map_fd, int(rescue.max_entries))
            if self.rescue is not None:
                self.ring_mode = "mmap"
                return
            self.ring.close()
            self.ring, self.ring_note = None, note
        self.ring_mode = "callback"
        table.open_ring_buffer(self._on_record)
        rescue.open_ring_buffer(self._on_rescued)

    def _fill_maps(self, progress: Callable[[str], None] | None = None) -> None:
        """Targets, their ports, and the kind of every fd they hold (before the probes attach)."""
        started = time.monotonic()
        targets = self.bpf["targets"]
        ports = self.bpf["listen_ports"]
        fd_kinds = self.bpf["fd_kinds"]
        for t in self.targets:
            targets[ctypes.c_uint32(t.pid)] = ctypes.c_uint32(t.pid)
            for port in t.listen_ports:
                ports[ctypes.c_uint16(port)] = ctypes.c_uint32(t.pid)
            if "unixconn" in self.probes and t.unix_socket and len(self.unix_slots) < UNIX_SLOTS:
                slot = self.unix_slots[t.pid] = len(self.unix_slots)
                paths = self.bpf["unix_paths"]
                key = paths.Key()
                name = t.unix_socket.encode()[:ctypes.sizeof(key) - 1]    # NUL-terminated, as read
                ctypes.memmove(ctypes.byref(key), name, len(name))
                paths[key] = ctypes.c_uint32(slot)
                self.bpf["unix_slots"][ctypes.c_uint32(t.pid)] = ctypes.c_uint32(slot)

            def tick(done: int, total: int, pid=t.pid) -> None:
                elapsed = time.monotonic() - started
                if progress is not None and elapsed >= PROGRESS_AFTER_S:
                    progress(f"attaching: {done}/{total} fds of pid {pid} classified ({elapsed:.1f} s)")

            scanned = self.classifier.scan(t.pid, tick=tick)
            # the tracer's own connections (runtime/info_sampler.py) are never followed
            scanned = [(fd, events.FD_IGNORE, None) if (t.pid, fd) in self.ignore_fds else (fd, kind, info)
                       for fd, kind, info in scanned]
            _update_fd_kinds(fd_kinds, [(t.pid, fd, kind) for fd, kind, _ in scanned])
            for fd, kind, info in scanned:
                self._on_classified(t.pid, fd, kind, info)
            now = time.monotonic_ns()
            for _fd, _kind, info in scanned:
                if info is not None:
                    info.ts_enter = info.ts_exit = now
                    self._pending.append(events.encode(info))
            self.times.fds += len(scanned)
        self.times.scan_s = time.monotonic() - started

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
        mode = probe_mode(self.exec_attached)
        kib = self.ringbuf_pages * 4
        size = f"{kib // 1024}MiB" if kib >= 1024 else f"{kib}KiB"
        ring = f" ring {size}/{self.ring_mode}" if self.ring_mode else ""
        why = f" why {self.sampling.hz}Hz" if self.profiler is not None else ""
        note = f" ({self.sched_note})" if self.sched_note else ""
        return (f"pid {pids} probes {'+'.join(self.probes)} mode {mode} capture {self.capture_max}B{ring}{why}"
                f"{note}")

    # -- draining ---------------------------------------------------------------
    def _on_record(self, _ctx, data, size) -> None:
        self._pending.append(ctypes.string_at(data, size))

    def _on_rescued(self, _ctx, data, size) -> None:
        self._rescued.append(ctypes.string_at(data, size))

    def drain(self, max_records: int = DRAIN_MAX_RECORDS) -> list[bytes]:
        """The records the probes produced since the last call, in ring-buffer order: all of them,
        or the first max_records (then `backlog` is True and the rest wait for the next call)."""
        batch, self._pending = self._pending, []
        rescued, self._rescued = self._rescued, []
        if self.ring is not None:
            # events first, then the rescue ring, then the loss notes: a record that reached the
            # rescue ring (or neither ring) was put there before its thread went on, so before any
            # later record of its connection (the reply to a request) reached events. Reading
            # events first therefore never takes a record whose predecessors are still to come.
            before = len(batch)
            self.backlog = self.ring.drain(batch, max_records) >= max_records
            self.rescue.drain(rescued)
            rescued += self._lost_records()
            if rescued and self.ring.pending_bytes():
                # events stopped early (max_records, or a record still being written): a rescued
                # record newer than the last one drained from events waits for the next batch,
                # or it would overtake older events records
                newest = _ts_exit(batch[-1]) if len(batch) > before else 0
                self._rescued = [raw for raw in rescued if _ts_exit(raw) > newest]
                rescued = [raw for raw in rescued if _ts_exit(raw) <= newest]
        else:
            self.bpf.ring_buffer_consume()
            batch += self._pending
            self._pending = []
            rescued += self._rescued + self._lost_records()
            self._rescued = []
        rescued.sort(key=_ts_exit)
        if rescued:
            batch = merge_in_time_order(batch, rescued)
        if not batch:
            return batch
        out = []
        append = out.append
        fd_kinds = self.bpf["fd_kinds"]
        unknown = events.RTF_UNKNOWN_FD
        annotate = events.SCF_ANNOTATE if self.annotator is not None else 0
        # the sched flags share their bits with rt_flags (an engine READ's RTF_ENGINE_AT_CMD is 128 too):
        # only these kinds are ever annotated
        annotated_kinds = (events.OFFCPU, events.FORK)
        close, accept = events.CLOSE, events.ACCEPT
        family_at = events.OFFSETS["family"]
        flags_at, kind_at, tgid_fd_of = events.FLAGS_BYTE, events.KIND_BYTE, events.tgid_fd_of
        # (tgid, fd) -> keep? for the unknown-fd records of this batch: under load many records of
        # one fd are made before user space classifies it, and classifying reads /proc (the fd
        # link, /proc/net/tcp): once per fd and batch, not once per record
        decided: dict = {}
        sockets = SocketTables(self.classifier.proc)   # read at most once per batch, if at all
        for raw in batch:
            # flags and kind checked without decoding the record
            flags = raw[flags_at]
            if flags & annotate and raw[kind_at] in annotated_kinds:
                append(self.annotator.annotate(raw))    # a sched record: stack symbols, RSS, command line
                continue
            if flags & unknown and len(raw) >= events.HEADER_SIZE:
                tgid, fd = tgid_fd_of(raw)
                keep = decided.get((tgid, fd))
                if keep is None:
                    keep = decided[(tgid, fd)] = self._classify_unknown(tgid, fd, raw, fd_kinds, append, sockets)
                if keep:
                    append(raw)
                continue
            kind = raw[kind_at]
            if kind == close:
                tgid, fd = tgid_fd_of(raw)
                self.classifier.forget(tgid, fd)
                decided.pop((tgid, fd), None)
            append(raw)
            if kind == accept and raw[family_at] == events.AF_UNIX:
                append(self._unix_client(raw))
        self.records += len(out)
        if self.profiler is not None:
            out = self.profiler.process(out)
        return out

    def _unix_client(self, accept: bytes) -> bytes:
        """The FDINFO record naming the process behind a unix-socket connection just accepted
        (accept() gives no address for it), placed right after its ACCEPT: SO_PEERCRED while the
        connection is open, else the process probes/unixconn.c saw connect()."""
        ev = events.decode(accept)
        pid = peer_pid(ev.tgid, ev.fd)
        connected = ev.aux_ts2     # the pid unixconn.c paired with this accept (0: none)
        if pid is None and connected:       # closed already: the connect() seen is all there is
            name = unix_peer_name(connected, ev.peer_addr.split(b"\0", 1)[0].decode(errors="replace"))
        else:
            if pid and connected and pid != connected and ev.tgid in self.unix_slots:
                self._restart_unix_queue(ev.tgid)   # the pairing is off (a connect not seen): start over
            name = describe_peer(pid, self.classifier.proc)
        info = unix_client_info(name)
        info.tgid, info.tid, info.fd = ev.tgid, ev.tgid, ev.fd
        info.ts_enter = info.ts_exit = ev.ts_exit
        return events.encode(info)

    def _restart_unix_queue(self, tgid: int) -> None:
        """Empty the queue probes/unixconn.c keeps for tgid: later accepts pair with later connects."""
        self.unix_queue_restarts += 1
        queue = self.bpf[f"unix_queue{self.unix_slots[tgid]}"]
        for _ in range(UNIX_QUEUE):
            try:
                queue.pop()
            except KeyError:
                break

    def held_back(self) -> list[bytes]:
        """Rescued records drain() kept for a later batch: the last call when tracing stops, so
        that none is left behind (each is newer than every record drained from events)."""
        held, self._rescued = self._rescued, []
        return held

    def _lost_records(self) -> list[bytes]:
        """A LOST record per fd whose records neither ring took since the last call (the kernel
        notes them in lost_fds), placed by time among the records around the loss."""
        table = self.bpf["lost_fds"]
        spans = list(table.items())
        out = []
        for key, span in spans:
            del table[key]
            out.append(events.encode(events.Event(kind=events.LOST, tgid=key.tgid, tid=key.tgid, fd=key.fd,
                                                  ts_enter=span.first_ts, ts_exit=span.last_ts,
                                                  ret=span.records)))
        return out

    def _classify_unknown(self, tgid: int, fd: int, raw: bytes, fd_kinds, append, sockets) -> bool:
        """A record for an fd the kernel had not classified: classify the fd from /proc, tell the
        kernel, append an FDINFO record when there is news; True when the record is to be kept."""
        link = self.classifier.link(tgid, fd)
        if link is None:
            # closed since: nothing left to follow. No mark: the number's next holder starts unknown.
            self.dropped_unknown += 1
            return False
        key = fd_kinds.Key(tgid, fd)
        if (not raw[events.FLAGS_BYTE] & events.RTF_FILE_FD and key in fd_kinds
                and not self.classifier.reported(tgid, fd, link)):
            # the kernel marked this number (accept, open) after the record was made, and not for
            # a holder classified here: the record is an earlier, since closed, holder's.
            self.dropped_unknown += 1
            return False
        kind, info = self.classifier.classify(tgid, fd, link, sockets)
        self._on_classified(tgid, fd, kind, info)     # before the kernel follows it as a client
        fd_kinds[key] = ctypes.c_uint8(kind)
        if info is not None:
            info.ts_enter = info.ts_exit = events.ts_enter_of(raw)
            append(events.encode(info))
        return kind != events.FD_IGNORE

    def syscall_counts(self) -> dict | None:
        """Reads, writes and writevs the probes saw, where the kernel counts them instead of sending a
        record for each (None: every one is a record of the stream)."""
        return None

    def _on_classified(self, tgid: int, fd: int, kind: int, info) -> None:
        """An fd classified from /proc (info: its FDINFO event, or None): for subclasses that keep
        per-connection state in the kernel (tracer/engine/session.py)."""

    def ring_mark(self):
        """The producer's position now (None without the mapped reader): see ring_passed()."""
        return self.ring.producer_pos if self.ring is not None else None

    def ring_passed(self, mark) -> bool:
        """True once every record written before ring_mark() returned `mark` has been drained."""
        return mark is None or self.ring is None or self.ring.consumer_pos >= mark

    def counters(self) -> dict:
        """The kernel counters summed over CPUs (COUNTER_MAXIMA: the largest CPU's value), and the
        main ring's refusals per record kind."""
        table = self.bpf["counters"]
        out = {}
        for idx, name in COUNTER_NAMES.items():
            values = [int(v) for v in table[ctypes.c_int(idx)]]
            out[name] = max(values, default=0) if idx in COUNTER_MAXIMA else sum(values)
        kinds = self.bpf["refused_kinds"]
        out["refused_by_kind"] = {}
        for kind in range(events.ACCEPT, events.EXEC + 1):
            n = sum(int(v) for v in kinds[ctypes.c_int(kind)])
            if n:
                out["refused_by_kind"][events.KIND_NAMES[kind]] = n
        # drains that found events' consumer position not where we left it (nobody else may move it)
        out["consumer_moved"] = self.ring.moved if self.ring is not None else 0
        return out

    def counters_record(self) -> bytes:
        """The kernel counters as a COUNTERS record, to be fed and recorded with the stream."""
        c = self.counters()
        return events.encode(events.Event(kind=events.COUNTERS, ts_enter=time.monotonic_ns(),
                                          ts_exit=time.monotonic_ns(), ret=c["lost"], aux_ts=c["busy_ns"],
                                          aux_ts2=c["idle_ns"], tgid=self.targets[0].pid))

    def targets_alive(self) -> bool:
        return all(_process_alive(t.pid) for t in self.targets)

    def exit_records(self) -> list[bytes]:
        """An EXIT record for each target that is gone, to be fed and recorded with the stream."""
        now = time.monotonic_ns()
        return [events.encode(events.Event(kind=events.EXIT, ts_enter=now, ts_exit=now, tgid=t.pid, tid=t.pid))
                for t in self.targets if not _process_alive(t.pid)]

    def close(self) -> None:
        for reader in (self.ring, self.rescue):
            if reader is not None:
                reader.close()
        self.ring = self.rescue = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


@contextlib.contextmanager
def _load_errors():
    """bcc's compile, verifier and attach failures, as one line saying what to run."""
    try:
        yield
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BPFUnavailable(f"could not load the BPF probes: {first}",
                             "run `redis-tracer doctor` to see what is missing") from None


def _return_freed_heap() -> None:
    """Give the compiler's freed heap back to the system: LLVM leaves tens of MB freed but mapped after a
    compile (measured: RssAnon 60 -> 29 MB, with the on-CPU sampler 85 -> 31 MB). glibc only."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _update_fd_kinds(fd_kinds, entries: list[tuple[int, int, int]]) -> None:
    """Write (tgid, fd, kind) entries: in one BPF_MAP_UPDATE_BATCH call per 4096 entries where the
    kernel has it: 20,000 entries in 0.08 s, against 11 us per entry one syscall at a time."""
    step = 4096
    for start in range(0, len(entries), step):
        chunk = entries[start:start + step]
        try:
            keys = (fd_kinds.Key * len(chunk))(*[fd_kinds.Key(tgid, fd) for tgid, fd, _ in chunk])
            values = (fd_kinds.Leaf * len(chunk))(*[kind for _, _, kind in chunk])
            fd_kinds.items_update_batch(keys, values)
        except Exception:  # noqa: BLE001 - no batch ops (old kernel or bcc): one by one
            for tgid, fd, kind in chunk:
                fd_kinds[fd_kinds.Key(tgid, fd)] = ctypes.c_uint8(kind)


_ts_exit = events.ts_exit_of


def merge_in_time_order(batch: list[bytes], rescued: list[bytes]) -> list[bytes]:
    """Records from events and the rescue ring as one batch: each keeps its own ring order and
    a rescued record goes where its end time (ts_exit) puts it."""
    return list(heapq.merge(batch, rescued, key=_ts_exit))


def _process_alive(pid: int) -> bool:
    """False once the process is gone or a zombie (killed, not yet reaped by its parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:][:1]
    return state not in (b"Z", b"X", b"")
