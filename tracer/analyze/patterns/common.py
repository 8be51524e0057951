"""What every cache-pattern detector shares: the command classes, a request's time and client, key
prefixes, and the bounded table each detector keeps its per-key or per-client state in.

Detectors see one stitched Request at a time (O(1) amortised) and never its values: only the
command, key, reply type, reply size, client and timestamps.
"""
from __future__ import annotations

from collections import OrderedDict

# command classes (req.command is upper-case; containers carry their subcommand, "CLIENT TRACKING")
READ, FILL, UPDATE, TXN, OTHER = range(5)
_READS = """GET HGET HGETALL HMGET MGET GETEX GETRANGE STRLEN EXISTS LRANGE LINDEX SMEMBERS SISMEMBER
SMISMEMBER ZRANGE ZSCORE ZRANGEBYSCORE ZREVRANGE HEXISTS HKEYS HVALS HLEN SCARD ZCARD LLEN JSON.GET"""
# writes that store a value the client computed (a cache fill, or the write half of read-modify-write)
_FILLS = "SET SETEX PSETEX SETNX GETSET MSET MSETNX HSET HMSET HSETNX APPEND SETRANGE"
# writes relative to the stored value (atomic on their own, racy when the client checked the value first)
_UPDATES = "INCR INCRBY DECR DECRBY INCRBYFLOAT HINCRBY HINCRBYFLOAT ZINCRBY"
# what makes a read-modify-write atomic, or ends that state
_TXNS = "MULTI EXEC DISCARD WATCH UNWATCH EVAL EVALSHA EVAL_RO EVALSHA_RO FCALL FCALL_RO"
CLASS = {name: cls for cls, names in ((READ, _READS), (FILL, _FILLS), (UPDATE, _UPDATES), (TXN, _TXNS))
         for name in names.split()}
NS_PER_MS = 1_000_000


def request_ts(req) -> int:
    """When Redis executed the request (as close as known): the order requests took effect."""
    return req.exec_start_ts or req.read_end_ts or req.read_start_ts or req.arrival_ts or req.reply_end_ts


def client_of(req) -> str:
    """The client as shown: its address, or its connection when the address is unknown."""
    return req.client or f"conn#{req.conn_id}"


def key_prefix(key: str) -> str:
    """'user:123' -> 'user:*', 'a:b:c' -> 'a:b:*', 'item42' -> 'item*', 'plain' -> 'plain'."""
    cut = key.rfind(":")
    if cut >= 0:
        return key[:cut + 1] + "*"
    stripped = key.rstrip("0123456789")
    return stripped + "*" if stripped != key and stripped else key


def ms(ns: int) -> float:
    return round(ns / NS_PER_MS, 3)


class Bounded(OrderedDict):
    """A dict of at most `cap` entries: put() of a new key past the cap evicts the least recently
    put or touched one (touch() on reads), counted in `evicted`. Plain item assignment (C speed) is
    for keys already present."""

    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap
        self.evicted = 0

    def put(self, key, value):
        if len(self) >= self.cap and key not in self:
            self.popitem(last=False)
            self.evicted += 1
        self[key] = value
        return value

    def touch(self, key):
        """The entry of `key` (None when absent), marked most recently used."""
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def touch_or_put(self, key, make):
        """The entry of `key`, marked most recently used; a new make() when absent."""
        value = self.touch(key)
        return self.put(key, make()) if value is None else value


def sample(items, n: int) -> list:
    """Up to n items, sorted, for a pattern's keys/clients lists."""
    return sorted(items)[:n]


class Written(Bounded):
    """Keys written during the trace (shared by the penetration and avalanche detectors): key -> the
    time of its latest SET-like write, 0 when it was only updated (INCR...) or its first miss since that
    SET was seen."""

    def on_fill(self, key, ts: int) -> None:
        if key in self:
            del self[key]       # the newest write is the youngest entry
        self.put(key, ts)

    def on_update(self, key) -> None:
        if key not in self:
            self.put(key, 0)
