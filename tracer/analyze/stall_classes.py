"""The stall classes and the commands that imply them."""
from __future__ import annotations

BIG_REPLY_BYTES = 1_000_000       # a reply of >= 1 MB marks a big key
LUA_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO",
                          "SCRIPT LOAD", "FUNCTION LOAD"})
KEYSPACE_COMMANDS = frozenset({"KEYS", "FLUSHALL", "FLUSHDB", "SCAN"})
# O(N) in the size of one key (UNLINK is not: it frees big values on a background thread)
BIGKEY_COMMANDS = frozenset({
    "DEL", "HGETALL", "HKEYS", "HVALS", "SMEMBERS", "SUNION", "SINTER", "SDIFF", "SUNIONSTORE",
    "SINTERSTORE", "SDIFFSTORE", "LRANGE", "LREM", "LTRIM", "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE",
    "ZREVRANGEBYSCORE", "ZRANGEBYLEX", "ZREMRANGEBYSCORE", "ZREMRANGEBYRANK", "ZUNIONSTORE",
    "ZINTERSTORE", "SORT", "DUMP", "RESTORE", "RENAME", "MIGRATE",
})
# Classes a command implies, the first winning a tie; "aof", "not-redis" and "unknown" come from the span.
CLASS_PRIORITY = ("bigkey", "lua", "keyspace")


def base_command(name: str | None) -> str:
    return (name or "?").split(" ", 1)[0].upper()


def command_class(req) -> str | None:
    """Stall class implied by a request's command (or reply size); None for O(1)/unknown cost."""
    name = (req.command or "?").upper()
    base = name.split(" ", 1)[0]
    if base in LUA_COMMANDS or name in LUA_COMMANDS:
        return "lua"
    if base in ("FLUSHALL", "FLUSHDB"):
        return None if str(req.key or "").upper() == "ASYNC" else "keyspace"
    if base in KEYSPACE_COMMANDS:
        return "keyspace"
    if base in BIGKEY_COMMANDS or (req.reply_bytes or 0) >= BIG_REPLY_BYTES:
        return "bigkey"
    return None
