"""A ProbeSession running the engine probe set (probes/engine.c instead of io.c)."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

from tracer.credentials import NO_CREDENTIALS, Credentials
from tracer.kernel.bpf_session import ENGINE_PROBES, ProbeSession
from tracer.engine import aggregates, layout
from tracer.engine.commands import CommandTable, table_for_target
from tracer.engine.snapshot import EngineSnapshot, read_snapshot
from tracer.errors import TracerError, UsageError
from tracer.kernel import events
from tracer.options import STALL_MS     # as `live --stall-ms`; slow records default to a fifth of it


@dataclass
class EngineConfig:
    stall_ms: float = STALL_MS
    slow_ms: float | None = None    # None: stall_ms / 5
    sample: int = 0                 # 1-in-N batches get a record (0: none)
    commands: tuple = ()            # trace --command: records only for these (the kernel's allow-list)
    budget: int = 0                 # ... and every batch up to this many per instance and second
    count_syscalls: bool = False    # count every read/write/writev (`count`: a per-CPU slot per call)

    @property
    def slow_ns(self) -> int:
        return int((self.slow_ms if self.slow_ms is not None else self.stall_ms / 5) * 1_000_000)

    @property
    def stall_ns(self) -> int:
        return int(self.stall_ms * 1_000_000)

    def cflags(self, pids, cmd_filter: bool = False) -> list[str]:
        if self.sample < 0:
            raise UsageError(f"--sample must be 0 or positive, not {self.sample}")
        slots = "".join(f"(t)=={pid}?{slot}:" for slot, pid in enumerate(pids)) + "0"
        return [f"-DENG_SLOW_NS={self.slow_ns}ULL", f"-DENG_STALL_NS={self.stall_ns}ULL",
                f"-DENG_SAMPLE={int(self.sample)}", f"-DENG_BUDGET={int(self.budget)}ULL",
                f"-DENG_SLOT_OF(t)=({slots})", f"-DENG_CMD_FILTER={int(cmd_filter)}"] + (
                    ["-DENG_COUNT_SYSCALLS"] if self.count_syscalls else [])


class EngineSession(ProbeSession):
    """ProbeSession with the engine probe set; snapshot() reads its aggregates."""

    def __init__(self, targets, config: EngineConfig | None = None, table: CommandTable | None = None,
                 credentials: Credentials = NO_CREDENTIALS, **kwargs):
        if len(targets) > layout.SLOTS:
            raise UsageError(f"the engine follows at most {layout.SLOTS} instances, not {len(targets)}",
                              "name fewer targets with --port/--pid")
        self.config = config or EngineConfig()
        self.slot_pids = {slot: t.pid for slot, t in enumerate(targets)}
        self.table = table or table_for_target(targets[0] if targets else None, credentials)
        # the kernel filters by command only when it knows every name asked for (else user space does)
        known = set(self.table.names[1:])
        self.kernel_commands = frozenset(self.config.commands) \
            if self.config.commands and known.issuperset(self.config.commands) else frozenset()
        super().__init__(targets, probes=ENGINE_PROBES,
                         extra_cflags=self.config.cflags(list(self.slot_pids.values()), bool(self.kernel_commands)),
                         on_load=self._seed, **kwargs)

    def _seed(self, bpf) -> None:
        from bcc import BPF

        # the tail-called parts of a read (probes/engine.c ENG_PROG_PARSE, ENG_PROG_READ, ENG_PROG_RAW)
        progs = bpf["eng_progs"]
        for idx, name in enumerate(("eng_parse", "eng_read_body", "eng_raw")):
            progs[ctypes.c_int(idx)] = ctypes.c_int(bpf.load_func(name, BPF.TRACEPOINT).fd)
        cmds = bpf["eng_cmds"]
        for raw, cmd_id, flags in self.table.kernel_entries():
            key = cmds.Key()
            ctypes.memmove(ctypes.byref(key), raw, layout.NAME_LEN)
            val = cmds.Leaf()
            val.id = cmd_id
            val.flags = flags | (layout.ECMD_TRACE if self.table.names[cmd_id] in self.kernel_commands else 0)
            cmds[key] = val
        from bcc.utils import get_possible_cpus
        self.ncpu = len(get_possible_cpus())

    def _on_classified(self, tgid: int, fd: int, kind: int, info) -> None:
        """A socket Redis connected out (a replica's master link, the cluster bus, MIGRATE) is no
        client: its connection state starts raw, so the kernel never counts the replication stream
        as requests and user space follows the link as --full does (tracer/decode/links.py)."""
        if kind != events.FD_CLIENT or info is None or not info.payload.startswith(b"out:"):
            return
        conns = self.bpf["eng_conns"]
        key = conns.Key(tgid, fd)
        state = conns.Leaf()
        state.flags = layout.ECF_RAW
        conns[key] = state

    def syscall_counts(self) -> dict | None:
        if not self.config.count_syscalls:
            return None
        c = self.snapshot().counters
        return {"read": c["reads"], "write": c["writes"], "writev": c["writevs"]}

    def snapshot(self) -> EngineSnapshot:
        return read_snapshot(self.bpf, self.table, self.slot_pids, self.ncpu)

    def aggregate_records(self) -> list[bytes]:
        """The aggregates as ENGINE records of the stream (the first ones also carry the command table)."""
        names = None if getattr(self, "_table_sent", False) else list(self.table.names)
        self._table_sent = True
        return aggregates.encode(self.snapshot(), names)

    def describe(self) -> str:
        return super().describe() + f" engine commands {len(self.table.names) - 1} ({self.table.source})"
