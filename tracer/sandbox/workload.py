"""A bounded, mixed Redis workload with trouble in it, for the demo (and tests).

Several client threads run GET/SET/HSET/LPUSH/ZADD (a little pipelining, a skewed key choice so
some keys are hot) at a fixed, modest rate; a churn thread opens short-lived connections; a
trouble thread regularly

* builds a BigKey (a hash of `bigkey_fields` fields, in small HSET batches so the build itself
  never blocks Redis for long) and DELetes it: freeing it stalls the main thread for hundreds of ms;
* runs a slow Lua script (a busy loop of `lua_ms` ms);

and a cache thread regularly (every `cache_every` s) sets off a cache stampede (8 clients miss an expired
product key at once and all rebuild it) and the inventory read-modify-write race (two clients GET the
stock, then both DECRBY it), from tracer.sandbox.cache_trouble.

Every loop is bounded in operations AND in time (`max_seconds`), and stop() ends them all.
Nothing here needs the tracer.
"""
from __future__ import annotations

import random
import threading
import time

from tracer.sandbox.cache_trouble import inventory_race, stampede

HOST = "127.0.0.1"
BIGKEY = "demo:bighash"
STAMPEDE_KEY = "demo:product:{n}"       # a fresh product key per round: each round is one stampede
STOCK_KEY = "demo:stock:1"
USER_KEYS = 1000
STAMPEDE_CLIENTS = 8
RACE_ROUNDS = 10
LUA_KEY = "demo:slow-lua"
# Busy loop until ARGV[1] µs passed (TIME is real time inside a script), with an iteration cap.
SLOW_LUA = """
local t0 = redis.call('TIME')
local start = t0[1] * 1000000 + t0[2]
local limit = tonumber(ARGV[1])
local i = 0
while i < 2000000000 do
  i = i + 1
  if i % 1000 == 0 then
    local t = redis.call('TIME')
    if (t[1] * 1000000 + t[2]) - start >= limit then break end
  end
end
return i
"""


class Workload:
    def __init__(self, port: int, host: str = HOST, clients: int = 4, rate_per_client: float = 250.0,
                 max_seconds: float = 60.0, bigkey_every: float = 6.0, bigkey_fields: int = 400_000,
                 bigkey_first: float = 0.0, lua_every: float = 9.0, lua_ms: float = 250.0,
                 lua_first: float = 2.5, churn_every: float = 1.0, batch_fields: int = 1000, seed: int | None = None,
                 cache_every: float = 7.0, cache_first: float = 1.5):
        self.host = host
        self.port = port
        self.clients = clients
        self.rate = rate_per_client
        self.max_seconds = max_seconds
        self.bigkey_every = bigkey_every
        self.bigkey_fields = bigkey_fields
        self.bigkey_first = bigkey_first
        self.lua_every = lua_every
        self.lua_ms = lua_ms
        self.lua_first = lua_first
        self.churn_every = churn_every
        self.batch_fields = batch_fields
        self.seed = seed
        self.cache_every = cache_every
        self.cache_first = cache_first
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.stats = {"ops": 0, "errors": 0, "bigkey_deletes": 0, "lua_runs": 0, "connections": 0,
                      "bigkey_build_s": None, "stampedes": 0, "races": 0}
        self.last_error = ""
        self.started = 0.0
        self._next_lua = float("inf")

    # -- control --------------------------------------------------------------------------------------
    def start(self) -> "Workload":
        self.started = time.monotonic()
        self.stop_event.clear()
        self._warm_up()
        for i in range(self.clients):
            self._spawn(f"client-{i}", self._client_loop, i)
        if self.churn_every:
            self._spawn("churn", self._churn_loop)
        if self.bigkey_every or self.lua_every:
            self._spawn("trouble", self._trouble_loop)
        if self.cache_every:
            self._spawn("cache", self._cache_loop)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every thread to stop and wait for them (a running DEL or script finishes first)."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.threads = [t for t in self.threads if t.is_alive()]

    def alive(self) -> int:
        return sum(t.is_alive() for t in self.threads)

    def __enter__(self) -> "Workload":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------------------------
    def _spawn(self, name, fn, *args) -> None:
        t = threading.Thread(target=self._guard, args=(fn, *args), name=f"workload-{name}", daemon=True)
        self.threads.append(t)
        t.start()

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as err:  # a workload thread never takes the demo down
            self._error(err)

    def _error(self, err) -> None:
        with self.lock:
            self.stats["errors"] += 1
            self.last_error = f"{type(err).__name__}: {err}"

    def _count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.stats[name] += n

    def _client(self):
        import redis

        with self.lock:
            self.stats["connections"] += 1
        return redis.Redis(host=self.host, port=self.port, socket_timeout=10, socket_connect_timeout=5)

    def _deadline(self) -> float:
        return self.started + self.max_seconds

    def _running(self) -> bool:
        return not self.stop_event.is_set() and time.monotonic() < self._deadline()

    # -- the steady traffic ------------------------------------------------------------------------------
    def _warm_up(self) -> None:
        """A warm cache: every user key exists before the clients start, so their misses are the cache
        thread's doing, not a cold start (which the stampede detector would rightly report)."""
        try:
            c = self._client()
            try:
                pipe = c.pipeline(transaction=False)
                for i in range(USER_KEYS):
                    pipe.set(f"demo:user:{i}", "v" * 16)
                pipe.execute()
                self._count("ops", USER_KEYS)
            finally:
                c.close()
        except Exception as err:  # the demo goes on with a cold cache
            self._error(err)

    def _client_loop(self, idx: int) -> None:
        rng = random.Random(None if self.seed is None else self.seed + idx)
        c = self._client()
        interval = 1.0 / self.rate if self.rate > 0 else 0.01
        max_ops = int(self.rate * self.max_seconds * 1.2) + 10
        ops = 0
        next_at = time.monotonic()
        errors_in_a_row = 0
        try:
            while self._running() and ops < max_ops:
                try:
                    ops += self._one_op(c, rng, idx)
                    errors_in_a_row = 0
                except Exception as err:
                    self._error(err)
                    errors_in_a_row += 1
                    if errors_in_a_row >= 5:
                        return  # the server is gone
                    self.stop_event.wait(0.2)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)
                elif delay < -1.0:
                    next_at = time.monotonic()  # fell behind (a stall): do not burst to catch up
        finally:
            self._count("ops", ops)
            c.close()

    @staticmethod
    def _user_key(rng: random.Random) -> str:
        # skewed: user:0 is the hottest, then user:1, ... (USER_KEYS keys in all)
        return f"demo:user:{int(USER_KEYS ** rng.random()) - 1}"

    def _one_op(self, c, rng: random.Random, idx: int) -> int:
        r = rng.random()
        if r < 0.45:
            c.get(self._user_key(rng))
        elif r < 0.65:
            c.set(self._user_key(rng), "v" * rng.randint(8, 256))
        elif r < 0.75:
            c.hset(f"demo:profile:{rng.randint(0, 99)}", f"f{rng.randint(0, 19)}", rng.randint(0, 10**6))
        elif r < 0.85:
            key = f"demo:queue:{idx}"
            c.lpush(key, f"job-{rng.randint(0, 10**6)}")
            if rng.random() < 0.1:
                c.ltrim(key, 0, 199)
                return 2
        elif r < 0.95:
            c.zadd("demo:leaderboard", {f"player:{rng.randint(0, 499)}": rng.randint(0, 10**4)})
        else:
            pipe = c.pipeline(transaction=False)
            for _ in range(8):
                if rng.random() < 0.5:
                    pipe.get(self._user_key(rng))
                else:
                    pipe.incr(f"demo:counter:{rng.randint(0, 9)}")
            pipe.execute()
            return 8
        return 1

    def _churn_loop(self) -> None:
        """Short-lived connections: the accept rate and accept-queue figures have something to show."""
        max_conns = int(self.max_seconds / self.churn_every) + 2
        n = 0
        while self._running() and n < max_conns:
            c = None
            try:
                c = self._client()
                c.ping()
                c.get("demo:user:0")
                self._count("ops", 2)
            except Exception as err:
                self._error(err)
            finally:
                if c is not None:
                    c.close()
            n += 1
            self.stop_event.wait(self.churn_every)

    # -- the trouble ----------------------------------------------------------------------------------------
    def _cache_loop(self) -> None:
        """A stampede and an inventory race every cache_every seconds (each takes well under a second)."""
        if self.stop_event.wait(self.cache_first):
            return
        max_rounds = int(self.max_seconds / self.cache_every) + 1
        for n in range(max_rounds):
            if not self._running():
                return
            missed = stampede(self.port, STAMPEDE_KEY.format(n=n), clients=STAMPEDE_CLIENTS, host=self.host)
            self._count("stampedes")
            self._count("ops", 2 * missed + STAMPEDE_CLIENTS - missed)
            inventory_race(self.port, STOCK_KEY, rounds=RACE_ROUNDS, host=self.host)
            self._count("races")
            self._count("ops", 4 * RACE_ROUNDS)
            self.stop_event.wait(self.cache_every)

    def _trouble_loop(self) -> None:
        c = self._client()
        try:
            lua = c.register_script(SLOW_LUA)
            next_big = self.started + self.bigkey_first if self.bigkey_every else float("inf")
            self._next_lua = self.started + self.lua_first if self.lua_every else float("inf")
            rounds = 0
            max_rounds = int(self.max_seconds) * 4 + 10
            while self._running() and rounds < max_rounds:
                rounds += 1
                self._maybe_lua(lua)
                now = time.monotonic()
                if now >= next_big:
                    next_big = now + self.bigkey_every
                    built = time.monotonic()
                    if self._build_bigkey(c, lambda: self._maybe_lua(lua)):
                        self.stats["bigkey_build_s"] = round(time.monotonic() - built, 2)
                        c.delete(BIGKEY)  # the stall: the whole hash is freed on the main thread
                        self._count("bigkey_deletes")
                        self._count("ops")
                    continue
                self.stop_event.wait(max(0.0, min(next_big, self._next_lua) - now))
        finally:
            try:
                c.unlink(BIGKEY)  # leave no half-built key behind (UNLINK: no stall at shutdown)
            except Exception:
                pass
            c.close()

    def _maybe_lua(self, lua) -> None:
        """Run the slow script when it is due (also between BigKey batches, to keep its rhythm)."""
        if time.monotonic() < self._next_lua or not self._running():
            return
        try:
            lua(keys=[LUA_KEY], args=[int(self.lua_ms * 1000)])
            self._count("lua_runs")
            self._count("ops")
        except Exception as err:
            self._error(err)
        self._next_lua = time.monotonic() + self.lua_every

    def _build_bigkey(self, c, between_batches) -> bool:
        """HSET the big hash in small pipelined batches; False when stopped before it was complete."""
        c.unlink(BIGKEY)
        value = "x" * 16
        n = self.bigkey_fields
        batch = max(1, self.batch_fields)
        for lo in range(0, n, batch * 4):
            if not self._running():
                return False
            pipe = c.pipeline(transaction=False)
            for b in range(lo, min(n, lo + batch * 4), batch):
                pipe.hset(BIGKEY, mapping={f"field:{i}": value for i in range(b, min(n, b + batch))})
            self._count("ops", len(pipe.execute()))
            between_batches()
            self.stop_event.wait(0.002)  # let everyone else in between batches
        return True
