"""The always-on engine against real redis-servers with real eBPF: per-command counts parsed in the
kernel equal Redis's own INFO commandstats (plain, pipelined, io-threads with threaded reads, split
frames, 5 MB values, MULTI/EXEC, inline commands through the raw path), latency histograms agree
with per-request latencies, records are made for slow, stalled and sampled requests, and
connection state is evicted on close."""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import pytest

from tracer.kernel import events
from tracer.engine.commands import quiet_client_options
from tracer.engine.raw import RawCounter
from tracer.engine.records import decode_request, is_request
from tracer.engine.session import EngineConfig, EngineSession
from tracer.sandbox.redis_server import RedisServer
from tracer.kernel.target import find_target

pytestmark = pytest.mark.bpf

STALL_MS = 100          # slow records from 20 ms (a fifth)
SAMPLE = 10


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """Two servers (plain with DEBUG enabled; io-threads 2 with threaded reads), one engine session."""
    from tracer.kernel.doctor import bpf_unavailable_reason

    if bpf_unavailable_reason() is not None:
        pytest.skip("BPF unavailable")     # conftest's marker policy reports it per test
    base = tmp_path_factory.mktemp("engine")
    plain = RedisServer(dir=str(base / "plain"), enable_debug_command="yes").start()
    threaded = RedisServer(dir=str(base / "threaded"), io_threads=2, io_threads_do_reads="yes").start()
    session = EngineSession([find_target(port=plain.port), find_target(port=threaded.port)],
                            EngineConfig(stall_ms=STALL_MS, sample=SAMPLE))
    try:
        session.attach()
        yield Engine(session, plain, threaded)
    finally:
        session.close()
        plain.stop()
        threaded.stop()


class Engine:
    def __init__(self, session, plain, threaded):
        self.session = session
        self.plain = plain
        self.threaded = threaded
        self.raw = RawCounter()
        self.requests = []

    def slot(self, server) -> int:
        return 0 if server is self.plain else 1

    def drain(self):
        records = self.session.drain()
        self.raw.feed(records)
        self.requests += [decode_request(r) for r in records if is_request(r)]
        return records

    def counts(self, server) -> dict:
        """name -> (count, done) in the kernel, plus the raw reads' commands counted in user space."""
        self.drain()
        snap = self.session.snapshot()
        out = {name: [cs.count, cs.done] for name, cs in snap.commands(self.slot(server)).items()}
        for (tgid, name), n in self.raw.counts.items():
            if tgid == server.pid:
                out.setdefault(name, [0, 0])[0] += n
        return out, snap

    def measure(self, server, action):
        """Per-command count deltas of the kernel (+raw) and of INFO commandstats around action()."""
        client = _client(server)
        client.config_resetstat()
        before, snap0 = self.counts(server)
        action()
        time.sleep(0.3)
        after, snap1 = self.counts(server)
        stats = client.info("commandstats")
        client.close()
        redis_calls = {}
        for key, val in stats.items():
            name = key[len("cmdstat_"):].split("|")[0].upper()
            if name in ("CONFIG", "INFO"):      # the measurement's own commands
                continue
            redis_calls[name] = redis_calls.get(name, 0) + int(val["calls"])
        delta = {n: after[n][0] - before.get(n, [0, 0])[0] for n in after}
        done = {n: after[n][1] - before.get(n, [0, 0])[1] for n in after}
        traced = {n: v for n, v in delta.items() if v and n not in ("CONFIG", "INFO")}
        counters = {k: snap1.counters[k] - snap0.counters[k] for k in snap1.counters}
        return traced, redis_calls, done, counters


def _client(server):
    """A redis-py client that sends only its commands (no HELLO / CLIENT SETINFO to count)."""
    return server.client(**quiet_client_options())


def _bench(server, *args):
    exe = shutil.which("redis-benchmark")
    if not exe:
        pytest.skip("redis-benchmark is not installed")
    subprocess.run([exe, "-h", "127.0.0.1", "-p", str(server.port), "-q", *args], check=True, timeout=120,
                   capture_output=True)


@pytest.mark.parametrize("pipeline", [1, 16, 32])
def test_counts_exact_with_pipelining(engine, pipeline):
    traced, calls, done, counters = engine.measure(
        engine.plain, lambda: _bench(engine.plain, "-c", "50", "-n", "20000", "-t", "get,set", "-P", str(pipeline)))
    assert traced == calls and calls["GET"] == calls["SET"] == 20000
    assert counters["desync"] == 0 and counters["raw_reads"] == 0
    # every command got its latency (pipelined batches of 32 fit the kernel's id ring)
    assert done["GET"] == done["SET"] == 20000


def test_counts_exact_with_threaded_reads(engine):
    srv = engine.threaded
    info = _client(srv).info("server")
    assert _client(srv).config_get("io-threads-do-reads")["io-threads-do-reads"] == "yes", info
    traced, calls, done, counters = engine.measure(
        srv, lambda: _bench(srv, "-c", "50", "-n", "20000", "-t", "get,set", "-P", "4", "--threads", "2"))
    assert traced == calls and calls["GET"] == calls["SET"] == 20000
    assert counters["desync"] == 0
    # the reads really happened on IO threads: Redis says so
    assert int(_client(srv).info("stats").get("io_threaded_reads_processed", 0)) > 0


def _send_split(server, parts, pause=0.15):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        for part in parts:
            s.sendall(part)
            time.sleep(pause)
        s.settimeout(2)
        time.sleep(0.2)
        s.recv(65536)


def test_split_frames_counted_and_named(engine):
    parts = [b"*3\r\n$3\r\nSET\r\n$3\r\nke", b"y\r\n$5\r\nhello\r\n",      # inside a key
             b"*2\r\n$3\r\nG", b"ET\r\n$3\r\nkey\r\n",                       # inside the name
             b"*2\r\n$", b"6\r\nstrlen\r\n$3\r\nkey\r\n",                    # inside a header
             b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*2", b"\r\n$4\r\nincr\r\n$1\r\nn\r\n"]  # lower case, split count
    traced, calls, done, counters = engine.measure(engine.plain, lambda: _send_split(engine.plain, parts))
    assert traced == calls == {"SET": 1, "GET": 1, "STRLEN": 1, "INCR": 2}
    assert counters["desync"] == 0 and counters["raw_reads"] == 0


def test_big_values_skipped_by_length(engine):
    value = b"v" * (5 * 1024 * 1024)
    srv = engine.plain

    def action():
        c = _client(srv)
        c.set("big", value)
        assert c.get("big") == value
        c.get("big")
        c.close()

    traced, calls, done, counters = engine.measure(srv, action)
    assert traced == calls and calls["SET"] == 1 and calls["GET"] == 2
    assert counters["desync"] == 0 and counters["raw_reads"] == 0
    snap = engine.session.snapshot()
    get = snap.commands(0)["GET"]
    assert get.bytes_out >= 2 * len(value)      # both 5 MB replies, written over many writes


def test_multi_exec(engine):
    srv = engine.plain

    def action():
        c = _client(srv)
        c.delete("a")
        with c.pipeline(transaction=True) as p:
            p.incr("a").incr("a").get("a")
            assert p.execute() == [1, 2, b"2"]
        c.close()

    traced, calls, done, counters = engine.measure(srv, action)
    assert traced == calls and calls.get("MULTI") == calls.get("EXEC") == 1 and calls.get("INCRBY") == 2, (traced, calls)


def test_inline_commands_counted_through_the_raw_path(engine):
    parts = [b"PING\r\n", b"SET inl 1\r\n", b"GET inl\r\n*2\r\n$3\r\nGET\r\n$3\r\ninl\r\n"]
    traced, calls, done, counters = engine.measure(engine.plain, lambda: _send_split(engine.plain, parts))
    assert traced == calls == {"PING": 1, "SET": 1, "GET": 2}
    assert counters["raw_reads"] == 3 and counters["desync"] == 0    # inline lines: the stream stays parsed


def test_slow_stalled_and_victim_records(engine):
    srv = engine.plain
    engine.drain()
    engine.requests.clear()
    victim_done = threading.Event()

    def victim():
        time.sleep(0.05)
        c = _client(srv)
        c.get("victim-key")
        c.close()
        victim_done.set()

    t = threading.Thread(target=victim)
    t.start()
    c = _client(srv)
    c.execute_command("DEBUG", "SLEEP", "0.2")
    c.close()
    t.join(10)
    assert victim_done.is_set()
    time.sleep(0.2)
    engine.drain()
    table = engine.session.table
    by_name = {}
    for r in engine.requests:
        by_name.setdefault(table.name(r.cmd_id), []).append(r)
    debug = [r for r in by_name.get("DEBUG", []) if r.flags & events.RQF_SLOW]
    assert len(debug) == 1
    rec = debug[0]
    assert rec.flags & events.RQF_STALL and rec.busy_ms >= 150
    assert 180e6 <= rec.latency_ns <= 2e9
    assert rec.captured == b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP"     # command and key, not the argument after
    victims = [r for r in by_name.get("GET", []) if r.flags & events.RQF_VICTIM and r.tgid == srv.pid]
    assert victims and victims[0].captured.endswith(b"victim-key")


def test_one_in_n_sampled(engine):
    srv = engine.plain
    engine.drain()
    engine.requests.clear()
    c = _client(srv)
    for i in range(2000):
        c.get(f"s{i}")
    c.close()
    time.sleep(0.2)
    engine.drain()
    table = engine.session.table
    sampled = [r for r in engine.requests if r.flags & events.RQF_SAMPLED and table.name(r.cmd_id) == "GET"]
    assert 2000 / SAMPLE * 0.5 < len(sampled) < 2000 / SAMPLE * 1.6
    assert all(r.captured.startswith(b"*2\r\n$3\r\nGET\r\n$") for r in sampled)


def _conn_entries(session) -> int:
    return sum(1 for _ in session.bpf["eng_conns"].keys())


def test_connection_state_evicted_on_close(engine):
    srv = engine.plain
    base = _conn_entries(engine.session)
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(20)]
    for s in socks:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
    for s in socks:
        s.recv(100)
    assert _conn_entries(engine.session) >= base + 20
    for s in socks:
        s.close()
    deadline = time.monotonic() + 5
    while _conn_entries(engine.session) > base and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _conn_entries(engine.session) <= base


def test_histogram_percentiles_match_per_request_latencies(redis_factory):
    """Every batch sampled: the kernel's records carry each request's exact timestamps, the histogram
    the same latencies bucketed; its percentiles must be within 10 % of the exact ones."""
    srv = redis_factory()
    session = EngineSession([find_target(port=srv.port)], EngineConfig(sample=1))
    session.attach()
    try:
        requests = []
        _bench(srv, "-c", "10", "-n", "5000", "-t", "get")
        time.sleep(0.3)
        records = session.drain()
        requests = [decode_request(r) for r in records if is_request(r)]
        snap = session.snapshot()
        lost = session.counters()["lost"]
    finally:
        session.close()
    gets = sorted(r.latency_ns for r in requests if session.table.name(r.cmd_id) == "GET" and r.ncmds == 1)
    hist = snap.commands(0)["GET"]
    assert lost == 0 and len(gets) == hist.done == 5000
    from tracer.analyze.histogram import nearest_rank

    for p in (50, 99, 99.9):
        exact = gets[nearest_rank(p, len(gets)) - 1]
        assert abs(hist.percentile(p) - exact) <= 0.10 * exact, (p, hist.percentile(p), exact)


def test_batch_of_many_distinct_commands(engine):
    """Six distinct commands in one pipelined batch: all counted exactly; the kernel keeps latency for
    four distinct ids per batch, the other two under the overflow id (and the counter says so)."""
    names = ["PING", "ECHO", "EXISTS", "STRLEN", "TYPE", "TTL"]
    frame = b"".join(b"*2\r\n$%d\r\n%s\r\n$1\r\nk\r\n" % (len(n), n.encode()) if n != "PING"
                     else b"*1\r\n$4\r\nPING\r\n" for n in names)
    traced, calls, done, counters = engine.measure(engine.plain, lambda: _send_split(engine.plain, [frame]))
    assert traced == calls == {n: 1 for n in names}
    assert counters["pend_overflow"] == 2 and counters["desync"] == 0
    assert sum(done.get(n, 0) for n in names[:4]) == 4
    assert done.get("(batch overflow)") == 2


def test_connections_open_before_attach_are_parsed(redis_factory):
    """A connection older than the engine has no state: it is parsed from its first read that starts a
    frame (after an idle pause, every read does)."""
    srv = redis_factory()
    old = _client(srv)
    old.set("k", "v")
    session = EngineSession([find_target(port=srv.port)], EngineConfig())
    session.attach()
    try:
        old.config_resetstat()
        for _ in range(50):
            old.get("k")
        old.incr("n")
        time.sleep(0.2)
        session.drain()
        snap = session.snapshot()
        stats = old.info("commandstats")
    finally:
        session.close()
        old.close()
    assert stats["cmdstat_get"]["calls"] == snap.commands(0)["GET"].count == 50
    assert snap.commands(0)["INCRBY"].count == 1 and snap.counters["desync"] == 0


def test_batch_over_the_parse_budget_goes_to_user_space_and_stays_exact(engine):
    """600 GETs in one write: more than the kernel parses per read (31 x 8 steps); the rest of the
    read goes up raw from the last command counted, user space counts it, the totals are exact, and
    the connection stays parsed for the next batch."""
    batch = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" * 600
    traced, calls, done, counters = engine.measure(
        engine.plain, lambda: _send_split(engine.plain, [batch, b"*2\r\n$6\r\nSTRLEN\r\n$1\r\nk\r\n"], pause=0.3))
    assert traced == calls == {"GET": 600, "STRLEN": 1}
    assert counters["raw_reads"] >= 1 and counters["desync"] == 0
    assert engine.raw.counts[(engine.plain.pid, "GET")] >= 1


@pytest.mark.xfail(strict=True, reason="known gap (issue 13, open): a raw rest over 4 x 4 KiB is not all sent up; "
                                       "a 64-record loop in eng_parse exceeds the verifier's budget (E2BIG)")
def test_reads_longer_than_16k_over_the_parse_budget_stay_exact(engine):
    """4,000 GETs in one write (100 kB): Redis reads more than 16 KiB at a time once its query buffer
    has grown (the demo's pipelined HSETs: ~20 KiB reads), so the rest of a read that goes up raw can
    exceed the four 4 KiB records the engine sent: commands in the uncaptured tail went uncounted."""
    batch = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" * 4000
    traced, calls, done, counters = engine.measure(
        engine.plain, lambda: _send_split(engine.plain, [batch, b"*2\r\n$6\r\nSTRLEN\r\n$1\r\nk\r\n"], pause=0.3))
    assert traced == calls == {"GET": 4000, "STRLEN": 1}
