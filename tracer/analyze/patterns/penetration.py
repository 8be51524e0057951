"""Cache penetration: a steady rate of nil replies for keys that are never SET during the trace (the
same missing key asked again and again, or random IDs under one prefix): every one reaches the database,
and the cache never learns."""
from __future__ import annotations

from tracer.analyze.patterns.common import Bounded, Written, key_prefix, ms, sample
from tracer.options import PatternOptions
from tracer.schema import Pattern
from tracer.units import NS_PER_S

ADVICE = ["cache the misses: store a null marker with a short TTL (e.g. SET <key> \"\" EX 60) so repeated "
          "lookups of a missing key stop at Redis",
          "put a Bloom filter of the existing IDs in front (e.g. BF.EXISTS from RedisBloom, or in the "
          "application) and reject unknown IDs before the cache and the database",
          "validate IDs at the edge (range, format): random or negative IDs are often a scan or an attack"]


class _Prefix:
    __slots__ = ("reads", "misses", "unfilled", "first", "last", "keys", "clients")

    def __init__(self, ts):
        self.reads = 0
        self.misses = 0          # every nil reply to a read
        self.unfilled = 0        # nil replies for keys not SET during the trace (so far)
        self.first = self.last = ts
        self.keys = 0            # distinct missing keys counted (approximate once keys are evicted)
        self.clients: set = set()    # the first few clients that missed


class PenetrationDetector:
    def __init__(self, options: PatternOptions = PatternOptions(), written: Written | None = None):
        self.min_misses = options.penetration_min_misses
        self.min_share = options.penetration_min_share
        self.min_span_ns = int(options.penetration_min_span_s * NS_PER_S)
        self.listed = options.max_listed
        self.prefixes = Bounded(options.max_keys)      # prefix -> _Prefix
        self.missing = Bounded(options.max_keys)       # key never SET -> [prefix, misses]
        # keys written during the trace: their misses are expiries (fed by the caller)
        self.written = Written(options.max_keys) if written is None else written

    def on_read(self, key, nil: bool, ts: int, client: str) -> None:
        prefix = key_prefix(key)
        p = self.prefixes.get(prefix)
        if p is None:
            p = self.prefixes.put(prefix, _Prefix(ts))
        p.reads += 1
        if nil:
            p.misses += 1
            p.last = max(p.last, ts)
            if key in self.written:
                return
            p.unfilled += 1
            if len(p.clients) < self.listed:
                p.clients.add(client)
            entry = self.missing.touch(key)
            if entry is None:
                self.missing.put(key, [prefix, 1])
                p.keys += 1
            else:
                entry[1] += 1

    def on_write(self, key) -> None:
        """`key` was written (after `written` heard of it)."""
        if self.missing:
            entry = self.missing.pop(key, None)
            if entry is not None:   # it was missing, then the application stored it: a normal fill
                p = self.prefixes.get(entry[0])
                if p is not None:
                    p.unfilled -= entry[1]
                    p.keys -= 1

    def results(self, input_: str = "full") -> list[Pattern]:
        found = [(prefix, p) for prefix, p in self.prefixes.items()
                 if p.unfilled >= self.min_misses and p.reads and p.unfilled / p.reads >= self.min_share
                 and p.last - p.first >= self.min_span_ns]
        found.sort(key=lambda kv: (-kv[1].unfilled, kv[0]))
        out = []
        for prefix, p in found[:self.listed]:
            top = sorted(((n, k) for k, (pre, n) in self.missing.items() if pre == prefix), reverse=True)
            keys = [k for _, k in top[:self.listed]]
            span_s = max(p.last - p.first, 1) / NS_PER_S
            share = round(p.unfilled / p.reads, 3)
            evidence = [f"{p.unfilled} of {p.reads} reads under {prefix} ({share:.0%}) got nil for keys never SET "
                        f"during the trace, {p.unfilled / span_s:.1f}/s over {span_s:.1f} s, {p.keys} distinct keys"]
            if top and top[0][0] > 1:
                evidence.append(f"the most asked missing key, {top[0][1]}, was asked {top[0][0]} times")
            figures = {"prefix": prefix, "reads": p.reads, "misses": p.misses, "never_set_misses": p.unfilled,
                       "miss_share": share, "distinct_keys": p.keys}
            if self.missing.evicted:
                figures["keys_evicted"] = self.missing.evicted
            out.append(Pattern(kind="penetration", keys=[prefix] + keys, clients=sample(p.clients, self.listed),
                               window_ms=ms(p.last - p.first),
                               count=p.unfilled, evidence=evidence, advice=list(ADVICE), input=input_,
                               figures=figures))
        return out
