"""Cache-usage trouble on demand, with real redis-py clients: a stampede on a key that just expired and
the inventory read-modify-write race (with its atomic controls: a Lua script, WATCH/MULTI).

Used by the demo workload and by the end-to-end tests of the cache-pattern detectors. Every function is
bounded in clients, rounds and time, and returns its own ground truth.
"""
from __future__ import annotations

import threading

HOST = "127.0.0.1"
TIMEOUT_S = 10.0
# The seed's inventory deduction: check and deduct in one atomic step on the main thread.
DEDUCT_LUA = """
local stock = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
if stock >= n then return redis.call('DECRBY', KEYS[1], n) end
return -1
"""


def _client(port: int, host: str = HOST):
    import redis     # imported where clients are made (as in workload.py): tracing never loads it

    return redis.Redis(host=host, port=port, socket_timeout=TIMEOUT_S, socket_connect_timeout=5)


def _run_threads(n: int, target) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True, name=f"cache-trouble-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S * 3)


def stampede(port: int, key: str, clients: int = 8, rebuild_s: float = 0.05, ttl_s: int = 60,
             host: str = HOST) -> int:
    """`clients` clients (one connection each) read `key` at the same moment, find it missing, "load it
    from the database" (sleep rebuild_s) and SET it back with a TTL: cache-aside without a mutex.
    Returns how many of them got nil."""
    conns = [_client(port, host) for _ in range(clients)]
    for c in conns:
        c.ping()        # connected before the barrier: the GETs go out together
    conns[0].delete(key)
    start = threading.Barrier(clients, timeout=TIMEOUT_S)
    missed = [False] * clients

    def one(i):
        c = conns[i]
        start.wait()
        if c.get(key) is None:
            missed[i] = True
            threading.Event().wait(rebuild_s)
            c.set(key, f"rebuilt-by-{i}", ex=ttl_s)

    try:
        _run_threads(clients, one)
    finally:
        for c in conns:
            c.close()
    return sum(missed)


def inventory_race(port: int, key: str, rounds: int = 20, mode: str = "plain", stock: int = 1000,
                   host: str = HOST) -> int:
    """Two clients deduct one unit of `key` per round, both having read the stock first (the reads of a
    round happen before either write: a barrier between them).

    mode "plain": GET, check, DECRBY — the oversell race; "lua": the check and the DECRBY in one script
    (GET before it only for display); "watch": WATCH, GET, MULTI/DECRBY/EXEC, retried when EXEC fails.
    Returns the rounds in which both clients read the same stock (decisions made on a value the other
    client was about to change)."""
    from redis import WatchError

    if mode not in ("plain", "lua", "watch"):
        raise ValueError(f"unknown mode {mode!r}")
    conns = [_client(port, host) for _ in range(2)]
    conns[0].set(key, stock)
    script = conns[0].register_script(DEDUCT_LUA)
    both_read = threading.Barrier(2, timeout=TIMEOUT_S)
    round_done = threading.Barrier(2, timeout=TIMEOUT_S)
    seen = [[None] * rounds for _ in range(2)]

    def deduct(i):
        c = conns[i]
        for r in range(rounds):
            if mode == "watch":
                with c.pipeline(transaction=True) as pipe:
                    for attempt in range(10):
                        try:
                            pipe.watch(key)
                            value = int(pipe.get(key))
                            if attempt == 0:    # the first reads of a round meet; a retry reads alone
                                seen[i][r] = value
                                both_read.wait()
                            pipe.multi()
                            pipe.decrby(key, 1)
                            pipe.execute()
                            break
                        except WatchError:
                            continue
                round_done.wait()
                continue
            seen[i][r] = int(c.get(key))
            both_read.wait()
            if mode == "lua":
                script(keys=[key], args=[1])
            elif seen[i][r] >= 1:
                c.decrby(key, 1)
            round_done.wait()

    try:
        _run_threads(2, deduct)
    finally:
        for c in conns:
            c.close()
    return sum(1 for a, b in zip(*seen) if a is not None and a == b)
