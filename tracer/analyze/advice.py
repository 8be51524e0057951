"""Short, concrete advice for each stall class (see tracer.analyze.diagnosis)."""
from __future__ import annotations

SCAN_ALTERNATIVE = {
    "HGETALL": "HSCAN", "HKEYS": "HSCAN", "HVALS": "HSCAN",
    "SMEMBERS": "SSCAN", "SUNION": "SSCAN", "SINTER": "SSCAN", "SDIFF": "SSCAN",
    "ZRANGE": "ZSCAN or ZRANGE with a bounded range", "ZRANGEBYSCORE": "ZRANGEBYSCORE ... LIMIT",
    "ZREVRANGE": "ZSCAN or ZREVRANGE with a bounded range", "ZREVRANGEBYSCORE": "ZREVRANGEBYSCORE ... LIMIT",
    "ZRANGEBYLEX": "ZRANGEBYLEX ... LIMIT", "LRANGE": "LRANGE with a bounded range (pages)",
    "SORT": "SORT ... LIMIT, or keep the data pre-sorted in a sorted set",
}

AOF = [
    "Use `appendfsync everysec` (not `always`) so fsync runs on a background thread.",
    "Set `no-appendfsync-on-rewrite yes` so no fsync is issued during BGSAVE/BGREWRITEAOF, when the disk is"
    " busiest and the main thread's AOF writes block behind it.",
    "Check the disk's write latency (iostat -x, `LATENCY HISTORY aof-fsync-always`); put the AOF on a faster"
    " or dedicated disk.",
]

LUA = [
    "Bound scripts with `lua-time-limit` / `busy-reply-threshold` (Redis 7) and keep each script short.",
    "Move loops over many keys or elements out of the script into the client, or batch them in small chunks.",
]

NOT_REDIS = [
    "Run `LATENCY DOCTOR` and `LATENCY LATEST` on the server for expire-cycle, eviction and fork events.",
    "Check CPU steal (top/vmstat `st`), swapping (`vmstat si/so`, `INFO memory`) and transparent huge pages.",
    "Mass expiry or eviction of big keys blocks the main thread: consider `lazyfree-lazy-expire yes` and"
    " `lazyfree-lazy-eviction yes`.",
]

EXPIRY = [
    "A big key expired and was freed on the main thread: set `lazyfree-lazy-expire yes` so expired values are"
    " freed on a background thread.",
    "Avoid TTLs on huge keys, or split them; many keys expiring at once: add jitter to their TTLs.",
]

EVICTION = [
    "maxmemory eviction freed big keys on the main thread: set `lazyfree-lazy-eviction yes`.",
    "Raise maxmemory or keep big keys out of an evicting instance; check `INFO stats` evicted_keys.",
]

UNKNOWN = [
    "Not enough evidence for a cause: compare with `SLOWLOG GET` and `LATENCY DOCTOR` for the same time.",
]


def _base(command: str | None) -> str:
    return (command or "").split(" ", 1)[0].upper()


def advice_for(cls: str, commands=(), big_reply: bool = False) -> list[str]:
    """Advice strings for a stall class; `commands` are the culprit command names (main one first)."""
    names = []
    for c in commands:
        b = _base(c)
        if b and b not in names:
            names.append(b)
    out: list[str] = []
    if cls == "bigkey":
        for name in names:
            if name in ("DEL", "RENAME", "RESTORE"):
                out.append(f"Delete big keys with UNLINK instead of {name}, or set `lazyfree-lazy-user-del yes`"
                           " (and `lazyfree-lazy-server-del yes` for implicit deletes).")
            elif name in SCAN_ALTERNATIVE:
                out.append(f"Use {SCAN_ALTERNATIVE[name]} instead of {name} on big keys (HSCAN/SSCAN/ZSCAN iterate"
                           " in small steps).")
            elif name in ("LREM", "LTRIM", "ZREMRANGEBYSCORE", "ZREMRANGEBYRANK", "ZUNIONSTORE", "ZINTERSTORE",
                          "SUNIONSTORE", "SINTERSTORE", "SDIFFSTORE"):
                out.append(f"{name} is O(N) in the size of the key: run it on smaller keys or in bounded chunks.")
            elif name in ("DUMP", "MIGRATE"):
                out.append(f"{name} serialises the whole key on the main thread: split the key before moving it.")
        if big_reply:
            out.append("Replies of megabytes are built on the main thread: fetch only the fields or ranges you need.")
        out.append("Split the big key into several smaller keys (e.g. hash by field into N buckets); find them with"
                   " `redis-cli --bigkeys` / `--memkeys`.")
        return out
    if cls == "lua":
        return list(LUA)
    if cls == "keyspace":
        for name in names:
            if name == "KEYS":
                out.append("Never use KEYS in production: iterate with SCAN (COUNT 100-1000) instead.")
            elif name in ("FLUSHALL", "FLUSHDB"):
                out.append(f"Use `{name} ASYNC`, or set `lazyfree-lazy-user-flush yes`.")
            elif name == "SCAN":
                out.append("Lower SCAN's COUNT (and avoid sparse MATCH/TYPE filters over a huge keyspace).")
        if not out:
            out.append("Whole-keyspace commands block the main thread: use SCAN with a small COUNT instead.")
        return out
    if cls == "aof":
        return list(AOF)
    if cls == "not-redis":
        return list(NOT_REDIS)
    if cls == "expiry":
        return list(EXPIRY)
    if cls == "eviction":
        return list(EVICTION)
    return list(UNKNOWN)
