"""The command table the kernel names commands with: upper-cased name -> small id.

Seeded from the server's own command list (`COMMAND LIST`, or `COMMAND` before Redis 7) plus a
static fallback, so a server that cannot be asked still gets its common commands named. Id 0 is
"other": counted all the same, named in user space from the records that carry its bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

from tracer.engine.layout import CMD_OVERFLOW, ECMD_LINK, ECMD_SECRET, NAME_LEN

OTHER = "(other)"
OVERFLOW = "(batch overflow)"

# Commands whose arguments the kernel never copies into a record (passwords).
SECRET_COMMANDS = frozenset({"AUTH", "HELLO", "ACL", "CONFIG", "MIGRATE"})
# commands that make a connection a replica link or a MONITOR: the kernel hands it to user space
LINK_COMMANDS = frozenset({"REPLCONF", "PSYNC", "SYNC", "MONITOR"})

STATIC_COMMANDS = tuple("""
ACL APPEND AUTH BGREWRITEAOF BGSAVE BITCOUNT BITFIELD BITOP BITPOS BLMOVE BLPOP BRPOP BRPOPLPUSH BZPOPMAX
BZPOPMIN CLIENT CLUSTER COMMAND CONFIG COPY DBSIZE DEBUG DECR DECRBY DEL DISCARD DUMP ECHO EVAL EVALSHA
EVAL_RO EVALSHA_RO EXEC EXISTS EXPIRE EXPIREAT EXPIRETIME FCALL FCALL_RO FLUSHALL FLUSHDB FUNCTION GEOADD
GEODIST GEOHASH GEOPOS GEOSEARCH GET GETBIT GETDEL GETEX GETRANGE GETSET HDEL HELLO HEXISTS HGET HGETALL
HINCRBY HINCRBYFLOAT HKEYS HLEN HMGET HMSET HRANDFIELD HSCAN HSET HSETNX HSTRLEN HVALS INCR INCRBY
INCRBYFLOAT INFO KEYS LASTSAVE LATENCY LINDEX LINSERT LLEN LMOVE LMPOP LPOP LPOS LPUSH LPUSHX LRANGE LREM
LSET LTRIM MEMORY MGET MIGRATE MONITOR MOVE MSET MSETNX MULTI OBJECT PERSIST PEXPIRE PEXPIREAT PFADD
PFCOUNT PFMERGE PING PSETEX PSUBSCRIBE PTTL PUBLISH PUBSUB PUNSUBSCRIBE QUIT RANDOMKEY READONLY READWRITE
RENAME RENAMENX REPLCONF REPLICAOF RESET RESTORE ROLE RPOP RPOPLPUSH RPUSH RPUSHX SADD SAVE SCAN SCARD
SCRIPT SDIFF SDIFFSTORE SELECT SET SETBIT SETEX SETNX SETRANGE SHUTDOWN SINTER SINTERCARD SINTERSTORE
SISMEMBER SLAVEOF SLOWLOG SMEMBERS SMISMEMBER SMOVE SORT SORT_RO SPOP SPUBLISH SRANDMEMBER SREM SSCAN
SSUBSCRIBE STRLEN SUBSCRIBE SUNION SUNIONSTORE SUNSUBSCRIBE SWAPDB SYNC PSYNC TIME TOUCH TTL TYPE UNLINK
UNSUBSCRIBE UNWATCH WAIT WATCH XACK XADD XAUTOCLAIM XCLAIM XDEL XGROUP XINFO XLEN XPENDING XRANGE XREAD
XREADGROUP XREVRANGE XSETID XTRIM ZADD ZCARD ZCOUNT ZDIFF ZDIFFSTORE ZINCRBY ZINTER ZINTERCARD
ZINTERSTORE ZLEXCOUNT ZMPOP ZMSCORE ZPOPMAX ZPOPMIN ZRANDMEMBER ZRANGE ZRANGEBYLEX ZRANGEBYSCORE
ZRANGESTORE ZRANK ZREM ZREMRANGEBYLEX ZREMRANGEBYRANK ZREMRANGEBYSCORE ZREVRANGE ZREVRANGEBYLEX
ZREVRANGEBYSCORE ZREVRANK ZSCAN ZSCORE ZUNION ZUNIONSTORE
""".split())


@dataclass
class CommandTable:
    """names[id] is the command with that id; ids[name] the reverse."""

    names: tuple
    ids: dict
    source: str          # "server+static" or "static (<why the server was not asked>)"

    def name(self, cmd_id: int) -> str:
        if cmd_id == CMD_OVERFLOW:
            return OVERFLOW
        return self.names[cmd_id] if 0 < cmd_id < len(self.names) else OTHER

    def kernel_entries(self):
        """(16-byte zero-padded name, id, flags) for the kernel's eng_cmds map."""
        for cmd_id, name in enumerate(self.names):
            if cmd_id == 0:
                continue
            raw = name.encode()
            if len(raw) <= NAME_LEN:
                flags = (ECMD_SECRET if name in SECRET_COMMANDS else 0) | (ECMD_LINK if name in LINK_COMMANDS else 0)
                yield raw.ljust(NAME_LEN, b"\0"), cmd_id, flags


def build_table(server_names=(), source: str = "static") -> CommandTable:
    """Ids 1.. for the static list then the server's other commands, up to the kernel's room."""
    names = [OTHER]
    seen = set()
    for name in list(STATIC_COMMANDS) + sorted(n.upper() for n in server_names):
        if name in seen or "|" in name or not name.isascii() or len(name.encode()) > NAME_LEN:
            continue
        if len(names) >= CMD_OVERFLOW:
            break
        seen.add(name)
        names.append(name)
    return CommandTable(names=tuple(names), ids={n: i for i, n in enumerate(names) if i}, source=source)


def quiet_client_options() -> dict:
    """redis.Redis options for a client that sends nothing but its commands: redis-py >= 5 announces
    itself with CLIENT SETINFO and newer ones negotiate with HELLO, which leave errors in the stats
    of servers before 7.2 (and would be counted as commands). RESP2 and no announcement."""
    import inspect

    import redis

    params = inspect.signature(redis.Redis.__init__).parameters
    out = {}
    if "protocol" in params:
        out["protocol"] = 2
    if "driver_info" in params:
        out["driver_info"] = None
    elif "lib_name" in params:
        out.update(lib_name=None, lib_version=None)
    return out


def server_command_names(endpoint, credentials, timeout: float = 2.0) -> list[str]:
    """The server's command names, asked through kernel/redis_client.py with the target's credentials,
    TLS and network namespace (raises OSError or RespError when it cannot be asked)."""
    from tracer.kernel.redis_client import RespError, redis_connection

    with redis_connection(endpoint, credentials, timeout) as call:
        try:
            names = call("COMMAND", "LIST")
        except RespError as err:
            if not str(err).startswith("ERR"):      # NOAUTH, NOPERM: COMMAND would be refused too
                raise
            names = [row[0] for row in call("COMMAND") if row]     # a server before COMMAND LIST (Redis 7)
    return [str(n) for n in names]


def table_for_target(target, credentials) -> CommandTable:
    """The command table for the first target: its own names when it answers, else the static list."""
    endpoint = target.endpoint(credentials) if target is not None and hasattr(target, "endpoint") else None
    if endpoint is None:
        return build_table(source="static (no port to ask)")
    try:
        return build_table(server_command_names(endpoint, credentials), source="server+static")
    except Exception as err:    # noqa: BLE001 (a protected or busy server: the static list is enough)
        return build_table(source=f"static ({type(err).__name__}: {str(err)[:80]})")
