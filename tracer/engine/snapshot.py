"""Reading the engine's per-CPU maps: one batched lookup per map and refresh, not per request."""
from __future__ import annotations

import ctypes
import errno
import time
from dataclasses import dataclass

from tracer.engine import layout
from tracer.engine.commands import CommandTable
from tracer.engine.histogram import EngineHistogram


@dataclass
class CommandStats:
    __slots__ = ("name", "count", "done", "sum_ns", "max_ns", "bytes_in", "bytes_out", "ok", "errors", "nil",
                 "moved", "ask", "untyped", "histogram")
    name: str
    count: int          # parsed commands: exact
    done: int           # with a latency (reply seen)
    sum_ns: int
    max_ns: int
    bytes_in: int
    bytes_out: int
    ok: int
    errors: int         # MOVED and ASK included
    nil: int
    moved: int
    ask: int
    untyped: int        # replies not classified (pipelined batches: all but the first)
    histogram: EngineHistogram

    def percentile(self, p: float) -> int:
        return self.histogram.percentile(p)


@dataclass
class InstanceStats:
    __slots__ = ("slot", "pid", "commands", "phases", "phase_sum_ns")
    slot: int
    pid: int
    commands: dict          # name -> CommandStats
    phases: dict            # phase name -> EngineHistogram
    phase_sum_ns: dict      # phase name -> ns summed over every request


@dataclass
class EngineSnapshot:
    __slots__ = ("ts", "instances", "counters")
    ts: float
    instances: dict         # slot -> InstanceStats
    counters: dict          # enum eng_counter name -> total

    def commands(self, slot: int = 0) -> dict:
        inst = self.instances.get(slot)
        return inst.commands if inst else {}


def _round8(n: int) -> int:
    return (n + 7) & ~7


def read_percpu_array(table, nkeys: int, value_size: int, ncpu: int) -> memoryview:
    """Every value of a per-CPU array in one BPF_MAP_LOOKUP_BATCH: nkeys x ncpu x round8(value_size) bytes."""
    from bcc.libbcc import lib

    stride = _round8(value_size)
    keys = (ctypes.c_uint32 * nkeys)()
    values = ctypes.create_string_buffer(nkeys * ncpu * stride)
    out_batch = ctypes.c_uint32(0)
    count = ctypes.c_uint32(nkeys)
    res = lib.bpf_lookup_batch(table.map_fd, None, ctypes.byref(out_batch), ctypes.byref(keys),
                               ctypes.byref(values), ctypes.byref(count))
    if res != 0 and ctypes.get_errno() not in (0, errno.ENOENT) and count.value < nkeys:
        raise OSError(ctypes.get_errno(), f"BPF_MAP_LOOKUP_BATCH on {nkeys} keys read {count.value}")
    return memoryview(values.raw)


def _sum_percpu(view: memoryview, base: int, stride: int, ncpu: int, fmt) -> list:
    """fmt's fields at view[base + cpu * stride], summed over the CPUs."""
    total = None
    for cpu in range(ncpu):
        row = fmt.unpack_from(view, base + cpu * stride)
        total = list(row) if total is None else [a + b for a, b in zip(total, row)]
    return total


def _first_u64_nonzero(view: memoryview, key: int, ncpu: int, stride: int, nfields: int) -> bool:
    base = key * ncpu * stride
    for cpu in range(ncpu):
        off = base + cpu * stride
        if any(view[off:off + 8 * nfields]):
            return True
    return False


def read_snapshot(bpf, table: CommandTable, slot_pids: dict, ncpu: int) -> EngineSnapshot:
    """slot_pids: slot -> pid of the instances traced."""
    nkeys = layout.SLOTS * layout.NCMD
    stats = read_percpu_array(bpf["eng_stats"], nkeys, layout.CMD_STATS.size, ncpu)
    phases = read_percpu_array(bpf["eng_phases"], layout.SLOTS, layout.PHASE_STATS.size * layout.PHASES, ncpu)
    nf = len(layout.CMD_STATS_FIELDS)
    stride = _round8(layout.CMD_STATS.size)
    instances = {}
    for slot, pid in slot_pids.items():
        commands = {}
        for cmd_id in range(layout.NCMD):
            key = slot * layout.NCMD + cmd_id
            if not _first_u64_nonzero(stats, key, ncpu, stride, 2):     # count or done
                continue
            row = _sum_percpu(stats, key * ncpu * stride, stride, ncpu, layout.CMD_STATS)
            # max_ns is a maximum per CPU, not a sum
            maxes = [layout.CMD_STATS.unpack_from(stats, key * ncpu * stride + c * stride)[3] for c in range(ncpu)]
            values = dict(zip(layout.CMD_STATS_FIELDS, row[:nf]))
            values["max_ns"] = max(maxes)
            name = table.name(cmd_id)
            commands[name] = CommandStats(name=name, histogram=EngineHistogram(row[nf:]), **values)
        phase_hists, phase_sums = {}, {}
        ph_stride = _round8(layout.PHASE_STATS.size * layout.PHASES)     # struct eng_slot_phases
        for ph, ph_name in enumerate(layout.PHASE_NAMES):
            row = _sum_percpu(phases, slot * ncpu * ph_stride + ph * layout.PHASE_STATS.size, ph_stride, ncpu,
                              layout.PHASE_STATS)
            phase_hists[ph_name] = EngineHistogram(row[len(layout.PHASE_STATS_FIELDS):])
            phase_sums[ph_name] = row[layout.PHASE_STATS_FIELDS.index("sum_ns")]
        instances[slot] = InstanceStats(slot=slot, pid=pid, commands=commands, phases=phase_hists,
                                        phase_sum_ns=phase_sums)
    counters_table = bpf["eng_counters"]
    counters = {}
    for idx, name in enumerate(layout.COUNTER_NAMES):
        counters[name] = sum(int(v) for v in counters_table[ctypes.c_int(idx)])
    return EngineSnapshot(ts=time.monotonic(), instances=instances, counters=counters)
