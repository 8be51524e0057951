"""The engine's aggregates as records of the stream (kind ENGINE), and back.

Once per refresh the runtime reads the kernel's per-CPU maps (EngineSession.snapshot()) and turns each
instance's cumulative figures into one ENGINE record: zlib-compressed JSON with per-command counters and
sparse histogram buckets, the phase histograms and, in the first record, the command table (so a
replay names commands whose records carry no bytes, AUTH and the like). The records are recorded like
every other, so a replay or a report reads back exactly the figures live mode showed.
"""
from __future__ import annotations

import json
import time
import zlib

from tracer.engine import layout
from tracer.engine.histogram import EngineHistogram
from tracer.kernel import events

MAX_PAYLOAD = 0xFFFF        # cap_len is a u16
MAX_DECODED = 4 << 20       # a damaged or hostile record never inflates beyond this


def _sparse(buckets) -> list:
    """[index, count, index, count, ...] of the non-empty buckets."""
    out = []
    for idx, n in enumerate(buckets):
        if n:
            out += (idx, n)
    return out


def _dense(sparse) -> list:
    buckets = [0] * layout.NBUCKETS
    for i in range(0, len(sparse) - 1, 2):
        idx, n = int(sparse[i]), int(sparse[i + 1])
        if 0 <= idx < layout.NBUCKETS and n > 0:
            buckets[idx] += n
    return buckets


def encode(snapshot, names: list | None = None, ts: int | None = None) -> list[bytes]:
    """One ENGINE record per instance of an EngineSnapshot; names: the command table to carry along."""
    ts = ts or time.monotonic_ns()
    out = []
    for slot, inst in sorted(snapshot.instances.items()):
        body = {"commands": {name: [getattr(cs, f) for f in layout.CMD_STATS_FIELDS] + [_sparse(cs.histogram.buckets)]
                             for name, cs in inst.commands.items()},
                "phases": {name: [inst.phase_sum_ns.get(name, 0), _sparse(h.buckets)] for name, h in inst.phases.items()},
                "counters": snapshot.counters}
        if names is not None:
            body["names"] = names
        payload = zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 1)
        if len(payload) > MAX_PAYLOAD:     # never seen (≈100 bytes per command); keep the record readable
            body["commands"] = {n: c[:-1] + [[]] for n, c in body["commands"].items()}
            payload = zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 9)[:MAX_PAYLOAD]
        out.append(events.encode(events.Event(kind=events.ENGINE, ts_enter=ts, ts_exit=ts, ret=slot,
                                              tgid=inst.pid, tid=inst.pid, payload=payload)))
    return out


class InstanceFigures:
    """One instance's cumulative figures, as the last ENGINE record said."""

    __slots__ = ("ts", "commands", "phases", "phase_sum_ns", "counters")

    def __init__(self, ts: int, commands: dict, phases: dict, phase_sum_ns: dict, counters: dict):
        self.ts = ts
        self.commands = commands        # name -> (fields dict, EngineHistogram)
        self.phases = phases            # phase -> EngineHistogram
        self.phase_sum_ns = phase_sum_ns
        self.counters = counters


def decode(ev) -> tuple[InstanceFigures, list | None]:
    """(figures, command table or None) of an ENGINE event; ValueError when the payload is damaged."""
    try:
        inflate = zlib.decompressobj()
        text = inflate.decompress(ev.payload, MAX_DECODED)
        if inflate.unconsumed_tail:
            raise ValueError(f"inflates beyond {MAX_DECODED} bytes")
        body = json.loads(text)
        commands = {}
        for name, row in body.get("commands", {}).items():
            fields = dict(zip(layout.CMD_STATS_FIELDS, (int(v) for v in row[:-1])))
            commands[str(name)] = (fields, EngineHistogram(_dense(row[-1])))
        phases = {str(n): EngineHistogram(_dense(s[1])) for n, s in body.get("phases", {}).items()}
        phase_sum_ns = {str(n): int(s[0]) for n, s in body.get("phases", {}).items()}
        counters = {str(k): int(v) for k, v in body.get("counters", {}).items()}
        names = body.get("names")
    except (zlib.error, ValueError, TypeError, AttributeError, IndexError, RecursionError) as err:
        raise ValueError(f"damaged ENGINE record: {err}") from None
    return InstanceFigures(ev.ts_exit or ev.ts_enter, commands, phases, phase_sum_ns, counters), \
        [str(n) for n in names] if isinstance(names, list) else None
