"""Avalanche: many keys under one prefix expire within the same second (SET together with the same
EX/PX), and their misses all reach the database at once.

The EX/PX arguments are masked like values and never read; the TTL is inferred instead: a key SET
during the trace that later gets a nil reply has lived from its SET to that miss. A burst of such first
misses under one prefix in one second, with alike lifetimes, is the avalanche. When the tracer sampled
the target's INFO, the growth of `expired_keys` around that second corroborates it."""
from __future__ import annotations

from collections import deque

from tracer.analyze.patterns.common import Bounded, Written, key_prefix, ms, sample
from tracer.options import PatternOptions
from tracer.schema import Pattern
from tracer.units import NS_PER_S, fmt_ms

ADVICE = ["add jitter to the TTLs (e.g. EX 3600 + random 0..300) so keys written together do not expire together",
          "refresh or pre-warm keys that are written in bulk before they expire, or give the hottest ones no TTL "
          "and a logical expiry"]
LIFETIMES_KEPT = 256    # per burst, for the inferred TTL
INFO_SAMPLES_KEPT = 4096    # (ts, expired_keys) of the latest INFO samples


class _Burst:
    __slots__ = ("count", "keys", "lifetimes", "clients", "last_ts")

    def __init__(self):
        self.count = 0
        self.last_ts = 0        # its latest first miss
        self.keys: list = []
        self.lifetimes: list = []
        self.clients: set = set()


class AvalancheDetector:
    def __init__(self, options: PatternOptions = PatternOptions(), written: Written | None = None):
        self.min_keys = options.avalanche_min_keys
        self.listed = options.max_listed
        # key -> ts of its last SET, 0 after its first miss (fed by the caller: Written.on_fill)
        self.set_at = Written(options.max_keys) if written is None else written
        self.bursts = Bounded(options.max_keys)        # (prefix, second of the miss) -> _Burst
        self.expired = deque(maxlen=INFO_SAMPLES_KEPT)  # (ts, INFO expired_keys), in time order

    def on_info(self, ts: int, sample) -> None:
        """A sample of the target's INFO (kernel.info.InfoSample)."""
        if sample.expired_keys is not None and ts:
            self.expired.append((ts, sample.expired_keys))

    def expired_around(self, sec: int, last_miss_ts: int) -> tuple[int, float] | None:
        """(keys INFO says expired, over how many seconds) between the last sample before that second and
        the first one after it (or after its last miss: a key that is read after its TTL is expired by
        that read, so a sample taken after the misses but before the second ends counts them; this is
        the last sample of a trace that stops right after the burst); None without samples on both sides."""
        start, end = sec * NS_PER_S, min((sec + 1) * NS_PER_S, last_miss_ts)
        before = after = None
        for ts, n in self.expired:
            if ts <= start:
                before = (ts, n)
            elif ts >= end:
                after = (ts, n)
                break
        if before is None or after is None or after[1] < before[1]:     # a restart resets the counter
            return None
        return after[1] - before[1], (after[0] - before[0]) / NS_PER_S

    def on_miss(self, key, ts: int, client: str) -> None:
        set_ts = self.set_at.get(key)
        if not set_ts or ts <= set_ts:
            return
        self.set_at[key] = 0    # one first miss per SET
        slot = (key_prefix(key), ts // NS_PER_S)
        burst = self.bursts.touch_or_put(slot, _Burst)
        burst.count += 1
        burst.last_ts = max(burst.last_ts, ts)
        if len(burst.keys) < LIFETIMES_KEPT:
            burst.keys.append(key)
            burst.lifetimes.append(ts - set_ts)
        if len(burst.clients) < self.listed:
            burst.clients.add(client)

    def results(self, input_: str = "full") -> list[Pattern]:
        by_prefix: dict = {}
        for (prefix, sec), burst in self.bursts.items():
            if burst.count >= self.min_keys:
                by_prefix.setdefault(prefix, []).append((sec, burst))
        out = []
        ranked = sorted(by_prefix.items(), key=lambda kv: (-max(b.count for _, b in kv[1]), kv[0]))
        for prefix, bursts in ranked[:self.listed]:
            sec, worst = max(bursts, key=lambda sb: (sb[1].count, -sb[0]))
            lives = sorted(worst.lifetimes)
            ttl_ms, spread_ms = ms(lives[len(lives) // 2]), ms(lives[-1] - lives[0])
            n = worst.count
            evidence = [f"{n} keys under {prefix} got their first nil within one second, {ttl_ms / 1000:.1f} s after "
                        f"they were SET (lifetimes within {fmt_ms(spread_ms)}: the same TTL)"]
            if len(bursts) > 1:
                evidence.append(f"{len(bursts)} such seconds in the trace")
            figures = {"prefix": prefix, "keys_in_worst_second": n, "inferred_ttl_ms": ttl_ms,
                       "lifetime_spread_ms": spread_ms, "seconds": len(bursts)}
            expired = self.expired_around(sec, worst.last_ts)
            if expired is not None:
                keys_expired, over_s = expired
                evidence.append(f"INFO: {keys_expired:,} keys expired in the {over_s:.1f} s around that second")
                figures.update(info_expired_keys=keys_expired, info_window_s=round(over_s, 3))
            keys = [prefix] + worst.keys[:self.listed]
            out.append(Pattern(kind="avalanche", keys=keys, clients=sample(worst.clients, self.listed),
                               window_ms=1000.0, count=sum(b.count for _, b in bursts), evidence=evidence,
                               advice=list(ADVICE), input=input_, figures=figures))
        return out
