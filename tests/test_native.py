"""The compiled fast paths give exactly what the pure-Python reference gives.

Recordings (the fixtures, a synthetic pipelined trace, and real recordings made here: pipelining,
io-threads, MULTI, big values, protocol errors) are read back through both paths — the reference
forced with REDIS_TRACER_PURE_PYTHON=1 — and `report --json` and the `trace --json` lines must be
identical. Hypothesis feeds random and mutated RESP and records to both and fails on any crash or
difference. Without a compiler the compiled path is absent and these tests skip, unless
REDIS_TRACER_REQUIRE_NATIVE=1 (CI: .ci/run), which makes a missing build a failure.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer import native
from tracer.decode import resp
from tracer.kernel import events

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
REQUIRE_ENV = "REDIS_TRACER_REQUIRE_NATIVE"
EXAMPLES = int(os.environ.get("NATIVE_EXAMPLES", 400))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def compiled_path():
    active, why = native.status()
    if not active:
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_ENV}=1 but {why}", pytrace=False)
        pytest.skip(why)


# -- whole recordings through both paths ------------------------------------------------------------
def _outputs(trace: Path, pure: bool) -> tuple[str, str]:
    env = dict(os.environ)
    env.pop(native.PURE_ENV, None)
    if pure:
        env[native.PURE_ENV] = "1"

    def run(*args):
        proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                              env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    path = run("-c", "from tracer import native; print(native.status()[0])").strip()
    assert path == str(not pure)
    return (run("-m", "tracer", "report", str(trace), "--json"),
            run(str(FIXTURES / "requests_jsonl.py"), str(trace)))


def assert_identical(trace: Path) -> str:
    compiled_report, compiled_lines = _outputs(trace, pure=False)
    reference_report, reference_lines = _outputs(trace, pure=True)
    assert compiled_report == reference_report
    assert compiled_lines == reference_lines
    return reference_report


@pytest.mark.parametrize("name", ("single", "multi"))
def test_fixture_recordings_are_identical(name):
    assert_identical(FIXTURES / f"{name}.rtrace")


def test_synthetic_pipelined_trace_is_identical(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import stitcher_throughput
    finally:
        sys.path.pop(0)
    trace = tmp_path / "synthetic.rtrace"
    stitcher_throughput.phase_build(str(trace), 5000)
    assert '"requests": 5000' in assert_identical(trace)


@pytest.mark.bpf
def test_real_recordings_are_identical(redis_factory, tmp_path):
    """Pipelining, io-threads, MULTI, a value larger than the 4 KiB capture, protocol errors."""
    from reliability_util import connect, read_some
    from tracer_proc import TracerProcess

    server = redis_factory(io_threads=2, io_threads_do_reads="yes")
    trace = tmp_path / "real.rtrace"
    tracer = TracerProcess("record", "--port", str(server.port), "-o", str(trace))
    c = server.client()
    pipe = c.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"k:{i}", i)
        pipe.get(f"k:{i}")
        pipe.hset("h", f"f{i}", "v")
        pipe.incr("n")
    pipe.execute()
    tx = c.pipeline(transaction=True)
    tx.set("a", 1).incr("a").lrange("l", 0, -1).mget("a", "k:1", "missing")
    tx.execute()
    c.set("big", b"v" * 20_000)
    assert len(c.get("big")) == 20_000
    c.config_get("maxmemory")
    c.lpush("l", *range(50))
    c.lrange("l", 0, -1)
    for data in (b"*abc\r\n$3\r\nGET\r\n", b"*2\r\n:1\r\n", b"GET inline-key\r\nPING\r\n",
                 b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1073741824\r\n" + b"x" * 3000):
        s = connect(server.port)
        s.sendall(data)
        read_some(s, quiet_s=0.05, limit_s=2)
        s.close()
    c.close()
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    report = assert_identical(trace)
    assert '"MULTI"' in report and '"SET"' in report


# -- the parsers, fed random and mutated RESP -------------------------------------------------------
def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


NAMES = [b"GET", b"set", b"HSET", b"MGET", b"DEL", b"INCR", b"AUTH", b"CONFIG", b"CLIENT", b"EVAL", b"PING",
         b"XADD", b"hello", b"MULTI", b"EXEC", b"unknowncmd", b"G\xffT", b""]
arg_st = st.one_of(st.binary(max_size=12), st.sampled_from([b"key:1", b"a\r\nb", b"\xff\x00", b"x" * 200,
                                                            b"SET", b"requirepass", b"\r\n", b"\r"]))
command_st = st.builds(lambda name, args, star: (b"*%d\r\n" % (len(args) + 1) if star is None else star) +
                       _bulk(name) + b"".join(_bulk(a) for a in args),
                       st.sampled_from(NAMES), st.lists(arg_st, max_size=5),
                       st.one_of(st.none(), st.sampled_from([b"*01\r\n", b"*0\r\n", b"*70\r\n", b"*2\r\n"])))
INVALIDATE_PUSH = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$6\r\nuser:1\r\n$2\r\nk2\r\n"
INVALIDATE_MESSAGE = b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*2\r\n$6\r\nuser:1\r\n$2\r\nk2\r\n"
reply_st = st.one_of(
    st.sampled_from([b"+OK\r\n", b"+QUEUED\r\n", b"+secret-ish\r\n", b"$-1\r\n", b":42\r\n", b"-ERR no\r\n",
                     b"-MOVED 12 127.0.0.1:7001\r\n", b"*2\r\n$7\r\nmessage\r\n:1\r\n", b">3\r\n+pong\r\n:1\r\n:2\r\n",
                     b"%1\r\n+a\r\n:1\r\n", b"_\r\n", b"$05\r\nhello\r\n", b"+\r\n", b"\r\n", b"$x\r\n",
                     INVALIDATE_PUSH, INVALIDATE_MESSAGE, b">2\r\n$10\r\ninvalidate\r\n_\r\n",
                     b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$3\r\nabc\r\n"]),
    st.binary(max_size=40).map(_bulk),
    st.binary(max_size=20).map(lambda b: b"+" + b.replace(b"\r\n", b"") + b"\r\n"))


def test_invalidation_pushes_go_to_the_python_reference():
    """A CLIENT TRACKING push names keys the Python keeps (Reply.keys): the compiled fast path hands
    it back rather than decode it without them, and both paths give the same replies and spans."""
    if resp._native is None:
        pytest.skip("no compiled parser")
    for frame in (INVALIDATE_PUSH, INVALIDATE_MESSAGE):
        out, spans = [], []
        assert resp._native.reply_fast(frame, 0, len(frame), False, out, spans) == -1     # handed back at 0
        assert out == [] and spans == []
        stream = b"+OK\r\n" + frame + b"$3\r\nabc\r\n"
        _both(lambda: resp.ReplyParser(), [(stream, len(stream))])
        (frames, _, _, _), = _run_parser(lambda: resp.ReplyParser(), [(stream, len(stream))], True)[0]
        assert [f[6] for f in frames] == [None, ["user:1", "k2"], None]


def _mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for at, op, byte in edits:
        if not b:
            break
        at %= len(b)
        if op == 0:
            b[at] = byte
        elif op == 1:
            del b[at:at + 1 + byte % 8]
        else:
            b[at:at] = bytes([byte])
    return bytes(b)


def _chunks(data: bytes, cuts, drops):
    """(captured prefix, total bytes) per simulated syscall; some captures are cut short."""
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        piece = data[a:b]
        drop = drops[i] if i < len(drops) else 0
        yield (piece[:max(0, len(piece) - drop)] if drop else piece), len(piece)


def _run_parser(make, feeds, compiled: bool):
    saved = resp._native
    if not compiled:
        resp._native = None
    try:
        parser = make()
        out = []
        for data, total in feeds:
            frames, spans = parser.feed(data, total)
            out.append(([f.astuple() for f in frames], list(spans), parser.pending, parser.desynced))
        counters = {name: getattr(parser, name) for name in ("desyncs", "undecodable", "lost", "ignored", "oversized")
                    if hasattr(parser, name)}
        return out, counters
    finally:
        resp._native = saved


def _both(make, feeds):
    compiled = _run_parser(make, feeds, True)
    assert compiled == _run_parser(make, feeds, False)


edits_st = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 2), st.integers(0, 255)), max_size=4)
cuts_st = st.lists(st.integers(0, 10_000), max_size=5)
drops_st = st.lists(st.integers(0, 40), max_size=5)


# each parser: its class, the frames it is fed, what random bytes start with (a request frame's '*')
PARSERS = {"request": (resp.RequestParser, command_st, b"*"), "reply": (resp.ReplyParser, reply_st, b"")}


@pytest.mark.parametrize("kind", PARSERS)
@SETTINGS
@given(data=st.data(), edits=edits_st, cuts=cuts_st, drops=drops_st, show_values=st.booleans())
def test_parser_identical_on_mutated_resp(kind, data, edits, cuts, drops, show_values):
    parser, frame_st, _ = PARSERS[kind]
    stream = _mutate(b"".join(data.draw(st.lists(frame_st, min_size=1, max_size=12))), edits)
    _both(lambda: parser(show_values=show_values), list(_chunks(stream, cuts, drops)))


@pytest.mark.parametrize("kind", PARSERS)
@SETTINGS
@given(raw=st.binary(max_size=300), cuts=cuts_st, show_values=st.booleans())
def test_parser_identical_on_random_bytes(kind, raw, cuts, show_values):
    parser, _, prefix = PARSERS[kind]
    _both(lambda: parser(show_values=show_values), list(_chunks(prefix + raw, cuts, [])))


def test_request_window_boundary_is_identical():
    """Frames crossing the 16 KiB window of the fast path, and a command the compiled path hands back."""
    frames = b"".join(b"*3\r\n$3\r\nSET\r\n$5\r\nkey:%d\r\n" % (i % 10) + _bulk(b"v" * 700) for i in range(40))
    frames += b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n" + frames
    for cut in (0, 1, 5000, 16 * 1024 - 3, 16 * 1024 + 7):
        _both(lambda: resp.RequestParser(), [(frames[cut:], len(frames) - cut)])


# -- record decoding ---------------------------------------------------------------------------------
def _decoded(fn, raw):
    try:
        ev = fn(raw)
    except ValueError as e:
        return ("error", str(e))
    return tuple(getattr(ev, name) for name in events.Event.__slots__)


@SETTINGS
@given(st.binary(min_size=0, max_size=200), st.integers(0, 300))
def test_record_decode_identical(tail, cap):
    assert events.decode is not events.decode_py
    fields = list(events.HEADER.unpack(bytes(range(events.HEADER_SIZE))))
    fields[events.FIELDS.index(("I", "cap_len"))] = cap
    raw = events.HEADER.pack(*fields) + tail
    for record in (raw, memoryview(raw), raw[:random.Random(cap).randrange(1, 120)]):
        assert _decoded(events.decode, record) == _decoded(events.decode_py, record)


# -- the stitcher, fed random record streams --------------------------------------------------------
TGID = 100
FDS = (5, 6, 7)


def _record(kind, fd, ts, payload=b"", ret=None, tid=TGID, aux=0, aux2=0, flags=0):
    return events.encode(events.Event(ts_enter=ts, ts_exit=ts + 500, aux_ts=aux, aux_ts2=aux2,
                                      ret=len(payload) if ret is None else ret, tgid=TGID, tid=tid, fd=fd,
                                      kind=kind, flags=flags, payload=payload))


simple_command_st = st.builds(lambda name, args: b"*%d\r\n" % (len(args) + 1) + _bulk(name) + b"".join(map(_bulk, args)),
                              st.sampled_from([b"GET", b"SET", b"get", b"INCR", b"HSET", b"MGET", b"DEL"]),
                              st.lists(st.sampled_from([b"k", b"key:1", b"", b"v" * 30, b"\xff"]), max_size=3))
simple_reply_st = st.sampled_from([b"+OK\r\n", b"$3\r\nabc\r\n", b"$-1\r\n", b":7\r\n", b"+PONG\r\n", b"$0\r\n\r\n"])
clean_steps = (   # the common case the compiled loop stitches itself
    st.tuples(st.just("read"), st.sampled_from(FDS), st.lists(simple_command_st, min_size=1, max_size=4),
              st.just([]), st.just(0), st.booleans()),
    st.tuples(st.just("write"), st.sampled_from(FDS), st.lists(simple_reply_st, min_size=1, max_size=4),
              st.just([]), st.just(0), st.booleans()))
step_st = st.one_of(
    *clean_steps, *clean_steps, *clean_steps,
    st.tuples(st.just("read"), st.sampled_from(FDS), st.lists(command_st, min_size=1, max_size=4), edits_st,
              st.integers(0, 3), st.booleans()),
    st.tuples(st.just("write"), st.sampled_from(FDS), st.lists(reply_st, min_size=1, max_size=4), edits_st,
              st.integers(0, 3), st.booleans()),
    st.tuples(st.sampled_from(["accept", "close", "exec", "loop", "aof", "client", "short", "lost"]),
              st.sampled_from(FDS)))


def _stream(steps):
    ts = 10_000_000
    out = []
    for step in steps:
        ts += 10_000
        kind, fd = step[0], step[1]
        if kind in ("read", "write"):
            _, _, frames, edits, extra, io_thread = step
            data = b"".join(frames)
            data = _mutate(data, edits) if edits and extra == 0 else data
            out.append(_record(events.READ if kind == "read" else events.WRITE, fd, ts, data,
                               ret=len(data) + (extra if extra > 1 else 0), tid=TGID + 1 if io_thread else TGID,
                               aux=ts - 3000 if kind == "read" else 0, aux2=ts - 1000 if kind == "read" else 0))
        elif kind == "accept":
            out.append(_record(events.ACCEPT, fd, ts, aux=ts - 100))
        elif kind == "close":
            out.append(_record(events.CLOSE, fd, ts))
        elif kind == "lost":
            out.append(_record(events.LOST, fd, ts, ret=2))
        elif kind == "exec":
            out.append(_record(events.EXEC, -1, ts))
        elif kind == "loop":
            out.append(_record(events.LOOP, -1, ts, ret=1, aux=ts - 2_000_000))
        elif kind in ("aof", "client"):
            out.append(_record(events.FDINFO, fd, ts, b"",
                               ret=events.FD_AOF if kind == "aof" else events.FD_CLIENT))
        else:
            out.append(_record(events.READ, fd, ts, b"*1\r\n$4\r\nPING\r\n")[:-3])   # shorter than it says
    return out


def _stitch(records, compiled: bool, uprobe_exec: bool, show_values: bool, mask: bool):
    from tracer.stitch import stitcher as stitcher_mod
    from tracer.stitch.model import Clock

    saved = stitcher_mod._native
    stitched = []

    class Counting:     # the compiled loop, counting the records it stitched itself
        @staticmethod
        def feed_batch(stitcher, batch):
            stitched.append(saved.feed_batch(stitcher, batch))

    stitcher_mod._native = Counting if compiled else None
    try:
        got = []
        s = stitcher_mod.Stitcher(on_request=lambda req: got.append(
                                      (req.to_json(Clock(0)), [getattr(req, name) for name in req.__slots__])),
                                  on_busy=lambda span: got.append(("busy", span.start_ts, span.end_ts)),
                                  show_values=show_values, mask_payloads=mask, uprobe_exec=uprobe_exec)
        error = None
        for at in range(0, len(records), 7):     # batches, as a drain hands them over
            try:
                s.feed_raw(records[at:at + 7])
            except ValueError as e:
                error = str(e)
                break
        if error is None:
            s.finish()
        return (got, error, s.stats.as_dict(), s.first_ts, s.last_ts, sorted(s.conns)), sum(stitched)
    finally:
        stitcher_mod._native = saved


STITCHED = []


@SETTINGS
@given(st.lists(step_st, min_size=1, max_size=25), st.booleans(), st.booleans(), st.booleans())
def test_stitcher_identical_on_random_record_streams(steps, uprobe_exec, show_values, mask):
    from tracer.stitch import stitcher as stitcher_mod

    assert stitcher_mod._native is not None
    records = _stream(steps)
    compiled, stitched = _stitch(records, True, uprobe_exec, show_values, mask)
    assert compiled == _stitch(records, False, uprobe_exec, show_values, mask)[0]
    STITCHED.append(stitched)


def test_the_random_streams_reach_the_compiled_stitching():
    """(runs after the test above) many streams had records the compiled loop stitched itself"""
    if not STITCHED:
        pytest.skip("run with the random stream test")
    assert sum(1 for n in STITCHED if n) > len(STITCHED) // 10, STITCHED
