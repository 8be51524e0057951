"""Read-modify-write races (lost updates, the inventory oversell): client A reads k, client B reads k,
then both write k with a value derived from what they read, outside WATCH/MULTI and outside a script.

Values are never looked at: a write "derives from the read" when it is the same client's next command
after reading that key (not pipelined with the read: sent after the read's reply), within
race_window_ms. A read-modify-write is lost when another client's read-modify-write of the same key
took effect between its read and its write. Writes queued in MULTI, scripts (EVAL/FCALL) and nil reads
(a cache fill, see stampede) are not read-modify-writes."""
from __future__ import annotations

from tracer.analyze.patterns.common import FILL, NS_PER_MS, READ, TXN, UPDATE, Bounded, ms, sample
from tracer.options import PatternOptions
from tracer.schema import Pattern
from tracer.units import fmt_ms

ADVICE = ["do the check and the write in one atomic step: a Lua script (EVAL/EVALSHA/FUNCTION) that reads, "
          "checks and writes, e.g. if stock >= n then DECRBY",
          "or WATCH the key and write in MULTI/EXEC (retry when EXEC returns nil)",
          "or write with an atomic command and check its result: DECRBY stock n, and INCRBY it back when the "
          "result is negative; SET ... GET to swap a value"]
MAX_CLIENTS_LISTED = 64    # clients remembered per raced key


class _Client:
    __slots__ = ("key", "read_ts", "reply_end", "in_multi")

    def __init__(self):
        self.key = None          # the key its last command read, while a write may follow
        self.read_ts = 0
        self.reply_end = 0
        self.in_multi = False


class _Found:
    __slots__ = ("count", "clients", "max_gap", "first", "last")

    def __init__(self, ts):
        self.count = 0
        self.clients: set = set()
        self.max_gap = 0
        self.first = self.last = ts


class RaceDetector:
    """Per client: the key its last command read (when a value came back). Per key: the latest
    read-modify-write (when, by whom). A client's read-modify-write is lost when the key's latest one,
    by another client, took effect after its read: compared by execution time, so the order in which
    replies reach the tracer does not matter."""

    def __init__(self, options: PatternOptions = PatternOptions()):
        self.window_ns = int(options.race_window_ms * NS_PER_MS)
        self.listed = options.max_listed
        self.clients = Bounded(options.max_clients)    # client -> _Client
        self.last_rmw = Bounded(options.max_keys)      # key -> (ts, client) of its latest read-modify-write
        self.found: dict = {}                           # key -> _Found
        self.max_found = options.max_keys

    def on_request(self, req, ts: int, client: str, cls: int) -> None:
        c = self.clients.touch(client)
        if c is None:
            if cls != READ and cls != TXN:
                return          # nothing pending, nothing to start
            c = self.clients.put(client, _Client())
        if cls == TXN:
            name = req.command
            if name == "MULTI":
                c.in_multi = True
            elif name == "EXEC" or name == "DISCARD":
                c.in_multi = False
            c.key = None
            return
        if c.in_multi:
            return              # queued: takes effect at EXEC, atomically
        key = req.key
        if c.key is not None and key == c.key and (cls == FILL or cls == UPDATE):
            start = req.arrival_ts or req.read_start_ts
            if ts - c.read_ts <= self.window_ns and not (start and c.reply_end and start < c.reply_end):
                self._rmw_write(c, client, key, ts)
            c.key = None
            return
        if cls == READ and key is not None and req.reply_type == "ok":     # a value came back
            c.key, c.read_ts, c.reply_end = key, ts, req.reply_end_ts
        else:
            c.key = None

    def _rmw_write(self, c: _Client, client: str, key, ts: int) -> None:
        last = self.last_rmw.get(key)
        if last is not None and last[0] > c.read_ts and last[1] != client:
            found = self.found.get(key)
            if found is None and len(self.found) < self.max_found:
                found = self.found[key] = _Found(ts)
            if found is not None:
                found.count += 1
                if len(found.clients) < MAX_CLIENTS_LISTED:
                    found.clients.update((last[1], client))
                found.max_gap = max(found.max_gap, ts - c.read_ts)
                found.last = ts
        if last is None or ts >= last[0]:
            if last is None:
                self.last_rmw.put(key, (ts, client))
            else:
                self.last_rmw[key] = (ts, client)

    def results(self, input_: str = "full") -> list[Pattern]:
        ranked = sorted(self.found.items(), key=lambda kv: (-kv[1].count, kv[0]))
        out = []
        for key, f in ranked[:self.listed]:
            evidence = [f"{f.count} times a client read {key} and wrote it back after another client's "
                        f"read-modify-write of it took effect (lost update); "
                        f"read to write at most {fmt_ms(ms(f.max_gap))}",
                        "no WATCH/MULTI or script around them"]
            out.append(Pattern(kind="race", keys=[key], clients=sample(f.clients, self.listed),
                               window_ms=ms(f.max_gap), count=f.count, evidence=evidence, advice=list(ADVICE),
                               input=input_, figures={"interleavings": f.count, "clients_involved": len(f.clients),
                                                      "span_ms": ms(f.last - f.first)}))
        return out
