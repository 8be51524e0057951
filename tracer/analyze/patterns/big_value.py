"""Big values read often: keys whose replies are large and frequent cost network bytes and reply-write
time on every read."""
from __future__ import annotations

from tracer.analyze.patterns.common import Bounded, ms, sample
from tracer.options import PatternOptions
from tracer.schema import Pattern
from tracer.units import NS_PER_S, fmt_bytes

ADVICE = ["compress the value in the client (e.g. zstd/LZ4, or a compact serialisation instead of JSON)",
          "split it: a hash read field by field (HGET/HMGET) or smaller keys, so a read fetches what it needs",
          "cache it locally in the clients (Caffeine as an L1, or RESP3 CLIENT TRACKING), so most reads never cross "
          "the network"]


class _Value:
    __slots__ = ("reads", "bytes", "max", "first", "last", "clients")

    def __init__(self, ts):
        self.reads = 0
        self.bytes = 0
        self.max = 0
        self.first = self.last = ts
        self.clients: set = set()


class BigValueDetector:
    def __init__(self, options: PatternOptions = PatternOptions()):
        self.min_bytes = options.big_value_bytes
        self.min_reads = options.big_value_min_reads
        self.listed = options.max_listed
        self.values = Bounded(options.max_keys)       # key -> _Value, only replies >= big_value_bytes

    def on_reply(self, key, size: int, ts: int, client: str) -> None:
        """A reply of at least min_bytes to a request for `key`."""
        v = self.values.touch(key)
        if v is None:
            v = self.values.put(key, _Value(ts))
        v.reads += 1
        v.bytes += size
        v.max = max(v.max, size)
        v.last = ts
        if len(v.clients) < self.listed:
            v.clients.add(client)

    def results(self, input_: str = "full") -> list[Pattern]:
        found = sorted(((v.bytes, k, v) for k, v in self.values.items() if v.reads >= self.min_reads),
                       key=lambda t: (-t[0], t[1]))
        out = []
        for total, key, v in found[:self.listed]:
            span_s = max(v.last - v.first, 1) / NS_PER_S
            evidence = [f"{key}: {v.reads} replies of up to {fmt_bytes(v.max)}, {fmt_bytes(total)} in all "
                        f"({fmt_bytes(total / span_s)}/s)"]
            out.append(Pattern(kind="big-value", keys=[key], clients=sample(v.clients, self.listed),
                               window_ms=ms(v.last - v.first), count=v.reads, evidence=evidence,
                               advice=list(ADVICE), input=input_,
                               figures={"bytes": total, "max_reply_bytes": v.max,
                                        "mean_reply_bytes": total // v.reads, "bytes_per_s": round(total / span_s)}))
        return out
