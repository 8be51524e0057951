"""On-CPU attribution of stalls (on unless --no-why): the main thread's stacks while a long busy span ran.

probes/sample.c sends a SAMPLE record per cpu-clock tick of a target's main thread deep in a busy
span. They never reach the pipeline or a recording: `StackProfiler.process` takes them out of each
drained batch, and when the LOOP record that ends a span of at least the stall threshold comes, it
puts a STACKS record right after it, holding what the samples of that span ran as folded stacks
("root;...;leaf count" lines: user frames unwound with .eh_frame (kernel/unwind.py), then kernel
frames marked `_[k]`). Unwinding is done only for samples of spans that are stalls: a sample is
held raw until its span has lasted the threshold, then unwound at once (so a long stall holds
counts, not snapshots). The STACKS record is recorded like any other, so replay and report show
the same frames live mode did, without the binary.
"""
from __future__ import annotations

import os
import re
import struct
import threading
from collections import Counter
from dataclasses import dataclass

from tracer.kernel import events
from tracer.kernel.unwind import AddressSpace, unwind
from tracer.options import SAMPLE_HZ, STALL_MS

KSTACK_BYTES = 256              # probes/sample.c SAMPLE_KSTACK_BYTES
AFTER_FRACTION = 10             # a busy span is sampled once it has lasted stall / this
MAX_PENDING = 4096              # raw samples held per target before their span is known to be a stall
MAX_STACKS = 400                # distinct folded stacks kept per stall; the rest count as "[other]"
UNKNOWN = "[unknown]"
KERNEL_SUFFIX = "_[k]"          # flamegraph.pl's mark for kernel frames
PRELOAD_LIBS = re.compile(r"^(libc\.so|lib\w*malloc)")   # where a stall's leaf frames usually are


@dataclass(frozen=True)
class SamplingConfig:
    stall_ms: float = STALL_MS
    hz: int = SAMPLE_HZ

    @property
    def after_ns(self) -> int:
        """How far into a busy span its samples start."""
        return int(self.stall_ms * 1_000_000 / AFTER_FRACTION)

    def cflags(self) -> list[str]:
        return [f"-DSAMPLE_AFTER_NS={self.after_ns}ULL"]


class _Span:
    __slots__ = ("raw", "counts", "samples")

    def __init__(self):
        self.raw: list = []         # samples before the span was known to be a stall
        self.counts: Counter = Counter()
        self.samples = 0


class StackProfiler:
    """Turns SAMPLE records into one STACKS record per stall (see the module's doc)."""

    def __init__(self, config: SamplingConfig, ksym=None, space_of=AddressSpace):
        self.stall_ns = int(config.stall_ms * 1_000_000)
        self.config = config
        self._ksym = ksym               # kernel address -> name (bcc's BPF.ksym), None: addresses
        self._space_of = space_of
        self._spaces: dict[int, AddressSpace] = {}
        self._spans: dict[tuple[int, int], _Span] = {}   # (tgid, epoll wake) -> the span's samples
        self._kcache: dict[int, str] = {}
        self._preload_pids: list[int] = []  # targets whose unwind tables are parsed at the first sample
        self.samples = 0                # samples taken, unwound, and the stalls they explained
        self.unwound = 0
        self.stalls = 0

    def describe(self) -> str:
        return (f"why: {self.samples} on-CPU samples of busy spans over {self.stall_ns / 1e6 / AFTER_FRACTION:g} ms"
                f" ({self.config.hz} Hz), {self.unwound} unwound in stalls, {self.stalls} stalls explained")

    def attach(self, bpf, pids) -> None:
        """One cpu-clock event per target main thread (pid = its tid: it ticks only while that thread runs)."""
        from bcc import BPF, PerfSWConfig, PerfType

        # One event per thread, on whichever CPU it runs (cpu -1): bcc's attach_perf_event would open
        # one per online CPU and keep only the last call's events for its cleanup.
        fn = bpf.load_func(b"on_cpu_sample", BPF.PERF_EVENT)
        events_of = bpf.open_perf_events.setdefault((PerfType.SOFTWARE, PerfSWConfig.CPU_CLOCK), {})
        for pid in pids:
            events_of[len(events_of)] = bpf._attach_perf_event(fn.fd, PerfType.SOFTWARE, PerfSWConfig.CPU_CLOCK,
                                                               0, self.config.hz, pid, -1, -1)
        self._preload_pids = list(pids)

    def _start_preload(self) -> None:
        """Parsing redis-server's, libc's and the allocator's .eh_frame takes ~1.4 s of CPU: done beside the
        drain loop (a lock-free race at worst parses a file twice), at nice 19, and only once a first
        SAMPLE record says a busy span grew long. At attach it took that CPU from Redis under load
        (measured: `overhead.py --configs why`, SET 0.65 of untraced with a 1 s benchmark); a calm
        server now never pays it."""
        pids, self._preload_pids = self._preload_pids, []
        if pids:
            threading.Thread(target=self._preload, args=(pids,), name="why-preload", daemon=True).start()

    def _preload(self, pids) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)    # this thread only
        except OSError:
            pass
        for pid in pids:
            space = self._spaces.get(pid) or self._spaces.setdefault(pid, self._space_of(pid))
            exe = os.path.realpath(f"/proc/{pid}/exe") if os.path.exists(f"/proc/{pid}/exe") else ""
            space.preload(lambda path: path == exe or PRELOAD_LIBS.search(os.path.basename(path)) is not None)

    # -- the batch ------------------------------------------------------------------
    def process(self, batch: list) -> list:
        """The batch without its SAMPLE records, with a STACKS record after each stall's LOOP record."""
        kind_at, sample, loop = events.KIND_BYTE, events.SAMPLE, events.LOOP
        if not any(raw[kind_at] == sample for raw in batch) and not self._spans:
            return batch
        out = []
        for raw in batch:
            kind = raw[kind_at]
            if kind == sample:
                self._on_sample(raw)
                continue
            out.append(raw)
            if kind == loop:
                record = self._on_loop(events.decode(raw))
                if record is not None:
                    out.append(record)
        return out

    def _on_sample(self, raw) -> None:
        if self._preload_pids:
            self._start_preload()
        ev = events.decode(raw)
        key = (ev.tgid, ev.ts_enter)
        span = self._spans.get(key)
        if span is None:
            if len(self._spans) >= 64:  # spans whose LOOP record never came (a target gone)
                self._spans.pop(next(iter(self._spans)))
            span = self._spans[key] = _Span()
        self.samples += 1
        span.samples += 1
        if ev.ts_exit - ev.ts_enter >= self.stall_ns:
            for held in span.raw:
                self._count(span, held)
            span.raw = []
            self._count(span, ev)
        elif len(span.raw) < MAX_PENDING:
            span.raw.append(ev)

    def _on_loop(self, ev) -> bytes | None:
        wake, end = ev.aux_ts, ev.ts_enter
        span = self._spans.pop((ev.tgid, wake), None)
        for key in [k for k in self._spans if k[0] == ev.tgid and k[1] < wake]:
            del self._spans[key]        # older spans of this thread ended without a LOOP record
        if end - wake < self.stall_ns:
            return None
        span = span or _Span()          # no sample at all: the thread was off the CPU, which says something too
        for held in span.raw:
            self._count(span, held)
        self.stalls += 1
        return stacks_record(ev.tgid, wake, end, span.samples, span.counts, self.config)

    # -- one sample -----------------------------------------------------------------
    def _count(self, span: _Span, ev) -> None:
        span.counts[self.folded(ev)] += 1
        self.unwound += 1

    def folded(self, ev) -> str:
        """A SAMPLE record's stack, root first, as a folded-format line without its count."""
        space = self._spaces.get(ev.tgid)
        if space is None:
            space = self._spaces[ev.tgid] = self._space_of(ev.tgid)
        payload = ev.payload
        kbytes = max(0, min(ev.fd, KSTACK_BYTES, len(payload)))
        kips = [ip for (ip,) in struct.iter_unpack("<Q", payload[:kbytes - kbytes % 8]) if ip]
        ip, sp, bp = ev.aux_ts, ev.aux_ts2, ev.ret & 0xFFFF_FFFF_FFFF_FFFF
        pcs = unwind(ip, sp, bp, payload[KSTACK_BYTES:], space) if ip else []
        if pcs and space.module(pcs[0]) is None:
            space.refresh()             # a library loaded since the maps were read
            pcs = unwind(ip, sp, bp, payload[KSTACK_BYTES:], space)
        frames = []
        for pc in reversed(pcs):
            mod = space.module(pc)
            frames.append(mod.symbol(pc) if mod is not None else UNKNOWN)
        frames += [self._kname(ip) + KERNEL_SUFFIX for ip in reversed(kips)]
        return ";".join(f.replace(";", ":").replace(" ", "_") for f in frames) or UNKNOWN

    def _kname(self, ip: int) -> str:
        name = self._kcache.get(ip)
        if name is None:
            raw = self._ksym(ip) if self._ksym is not None else b""
            name = raw.decode("ascii", "replace") if raw and raw != b"[unknown]" else f"0x{ip:x}"
            if len(self._kcache) < 65536:
                self._kcache[ip] = name
        return name


def stacks_record(tgid: int, start_ts: int, end_ts: int, samples: int, counts: Counter,
                  config: SamplingConfig) -> bytes:
    """A STACKS record: the span, how it was sampled (aux_ts: from how far into the span, aux_ts2: Hz),
    and its folded stacks (the MAX_STACKS heaviest; the rest as [other])."""
    top = counts.most_common(MAX_STACKS)
    rest = sum(counts.values()) - sum(n for _, n in top)
    lines = [f"{stack} {n}" for stack, n in top] + ([f"[other] {rest}"] if rest else [])
    return events.encode(events.Event(kind=events.STACKS, tgid=tgid, tid=tgid, ts_enter=start_ts, ts_exit=end_ts,
                                      ret=samples, aux_ts=config.after_ns, aux_ts2=config.hz,
                                      payload="\n".join(lines).encode()))


PAYLOAD_MAX = 1 << 20           # bytes of a STACKS payload read back (a hostile recording cannot make it more)


@dataclass(frozen=True)
class StacksAt:
    """A STACKS record read back: which target's busy span, how many samples, and their folded stacks."""

    tgid: int
    start_ts: int
    end_ts: int
    samples: int
    folded: dict            # "root;...;leaf" -> samples
    expected: float = 0.0   # samples a thread on the CPU for the whole sampled part would have given

    @property
    def on_cpu_share(self) -> float | None:
        return min(1.0, self.samples / self.expected) if self.expected >= 1 else None


def stacks_of(ev: events.Event) -> StacksAt:
    folded: dict = {}
    for line in bytes(ev.payload[:PAYLOAD_MAX]).decode("utf-8", "replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            folded[stack] = folded.get(stack, 0) + int(n)
    sampled_ns = max(0, ev.ts_exit - ev.ts_enter - ev.aux_ts)
    expected = sampled_ns * min(ev.aux_ts2, 100_000) / 1e9
    return StacksAt(ev.tgid, ev.ts_enter, ev.ts_exit, max(0, ev.ret), folded, expected)
