"""Bounded state in the stitcher and the recorder's masking, on synthetic streams (no root needed)."""
from __future__ import annotations

import gc

from eventstream import Stream, bulk, cmd

from tracer.kernel import events
from tracer.analyze.analysis import Analyzer
from tracer.runtime.pipeline import Pipeline
from tracer.decode.redact import error_text_spans, redact_spans
from tracer.stitch.stitcher import MAX_CONNS, Stitcher

GET = cmd("GET", "k")
REPLY = bulk(b"v")


def _conn_events(pid, fd, t, port):
    """accept → GET → reply → close of one short connection, as the probes emit them."""
    fam, addr = events.peer_bytes("127.0.0.1")
    E = events.Event
    return (
        E(kind=events.ACCEPT, tgid=pid, tid=pid, fd=fd, ret=fd, ts_enter=t, ts_exit=t + 1, family=fam,
          peer_addr=addr, peer_port=port),
        E(kind=events.READ, tgid=pid, tid=pid, fd=fd, ret=len(GET), ts_enter=t + 2, ts_exit=t + 3,
          payload=GET, cap_len=len(GET)),
        E(kind=events.WRITE, tgid=pid, tid=pid, fd=fd, ret=len(REPLY), ts_enter=t + 4, ts_exit=t + 5,
          payload=REPLY, cap_len=len(REPLY)),
        E(kind=events.CLOSE, tgid=pid, tid=pid, fd=fd, ret=events.FD_CLIENT, ts_enter=t + 6, ts_exit=t + 6),
    )


def test_100k_connections_opened_and_closed_leave_no_state():
    a = Analyzer()
    got = [0]

    def on_request(req):
        got[0] += 1
        a.on_request(req)

    st = Stitcher(on_request=on_request, on_conn=a.on_conn, on_accept=a.on_accept, on_busy=a.on_busy)
    n = 100_000
    objects = []
    for i in range(n):
        # one connection every 100 us: 10 s of traffic, so the analyzer's time windows turn over
        for ev in _conn_events(1000, 10 + i % 5000, 1_000_000_000 + i * 100_000, 1024 + i % 60000):
            st.feed(ev)
        if i % 20_000 == 19_999:
            gc.collect()
            objects.append(len(gc.get_objects()))
    st.finish()
    assert got[0] == n and st.stats.requests == n and st.stats.unanswered == 0
    assert len(st.conns) == 0 and st.stats.accepted == n and st.stats.closed == n
    assert st.stats.evicted_conns == 0
    assert not a.live_conns and not a.accept_seen
    # live objects after 60k connections vs after 100k: flat (the stall detector keeps the last 50k
    # requests, LOOKBACK_MAX; everything else is windows and caps, nothing per closed connection)
    assert objects[-1] - objects[2] < 1000, objects


def test_connection_states_are_capped_least_recently_active_evicted():
    closed = []
    st = Stitcher(on_conn=closed.append, max_conns=1000)
    s = Stream()
    s.accept(5, 1)                # an old connection that stays busy
    for i in range(3000):         # connections whose CLOSE was never seen (lost events)
        s.accept(10 + i, 2000 + i)
        if i % 100 == 0:
            s.read(5, cmd("GET", f"busy{i}"))
            s.write(5, REPLY)
    s.read(10 + 2999, GET)        # one of the newest sends a request; a reply will come
    for raw in s.raw():
        st.feed(events.decode(raw))
    assert len(st.conns) <= 1000
    assert st.stats.evicted_conns == 3001 - len(st.conns) and st.stats.evicted_conns >= 2001
    assert (1000, 5) in st.conns            # active: kept
    assert (1000, 10) not in st.conns       # idle and oldest: evicted
    assert all(c.closed_by == "evicted" for c in closed)
    assert MAX_CONNS == 100_000


def test_eviction_reports_waiting_requests_as_unanswered():
    got = []
    st = Stitcher(on_request=got.append, max_conns=100)
    s = Stream()
    for i in range(100):
        s.accept(10 + i, 3000 + i)
        s.read(10 + i, cmd("GET", f"w{i}"))   # never answered
    s.accept(500, 9999)                       # over the cap: the least recently active go
    for raw in s.raw():
        st.feed(events.decode(raw))
    assert st.stats.evicted_conns == 1 and st.stats.unanswered == 1
    assert [r.key for r in got] == ["w0"] and got[0].reply_end_ts == 0


# -- the recorder's masking ---------------------------------------------------------------------
def _record(stream, show_values=False):
    class Sink:
        def __init__(self):
            self.records = []

        def write_many(self, records):
            self.records.extend(records)

        def maybe_flush(self):
            pass

    sink = Sink()
    p = Pipeline(show_values=show_values, writer=sink)
    p.feed(stream.raw())
    p.finish()
    return b"".join(sink.records)


def test_error_replies_echoing_acl_rules_are_masked_in_recordings():
    """Redis 7 echoes a bad ACL SETUSER rule in its error: '<password' / '#hash' would reach the file."""
    for show_values in (False, True):
        s = Stream()
        s.accept(7, 1)
        s.read(7, cmd("ACL", "SETUSER", "bob", "on", "<S3cretRemoved"))
        s.write(7, b"-ERR Error in ACL SETUSER modifier '<S3cretRemoved': The password you are trying to "
                   b"remove from the user does not exist\r\n")
        s.read(7, cmd("MULTI"))
        s.write(7, b"+OK\r\n")
        s.read(7, cmd("ACL", "SETUSER", "bob", "#S3cretHash"))
        s.write(7, b"+QUEUED\r\n")
        s.read(7, cmd("EXEC"))
        s.write(7, b"*1\r\n-ERR Error in ACL SETUSER modifier '#S3cretHash': bad hash\r\n")
        s.read(7, cmd("GET", "k"))
        s.write(7, b"-MOVED 3999 127.0.0.1:6381\r\n")
        data = _record(s, show_values)
        assert b"S3cret" not in data
        assert data.count(b"-ERR ") == 2 and b"-MOVED 3999 127.0.0.1:6381\r\n" in data


def test_config_get_reply_masked_even_with_show_values():
    s = Stream()
    s.accept(7, 1)
    s.read(7, cmd("CONFIG", "GET", "requirepass"))
    s.write(7, b"*2\r\n$11\r\nrequirepass\r\n$10\r\nTopS3cret!\r\n")
    s.read(7, cmd("GET", "k"))
    s.write(7, bulk(b"visible-value"))
    data = _record(s, show_values=True)
    assert b"TopS3cret!" not in data and b"visible-value" in data


def test_aof_bytes_captured_before_the_fd_was_classified_are_masked():
    s = Stream()
    s.aof_fd(9)
    s.write(9, cmd("SET", "k", "aof-value-secret"))
    data = _record(s)
    assert b"aof-value-secret" not in data


def test_error_text_spans_never_touch_framing():
    for payload in (b"-ERR a b\r\n", b"*2\r\n-ERR x\r\n:1\r\n", b"$9\r\nab\r\n-c d\r\n\r\n", b"-", b"\r\n-\r\n",
                    b"-ERR unterminated text", b"+OK\r\n-WRONGTYPE Operation against a key\r\n"):
        masked = redact_spans(payload, error_text_spans(payload))
        assert len(masked) == len(payload)
        lines = payload.split(b"\r\n")
        assert [line[:1] for line in masked.split(b"\r\n")] == [line[:1] for line in lines]
        assert masked.count(b"\r\n") == payload.count(b"\r\n")


def test_a_parser_exception_does_not_end_the_trace(monkeypatch):
    """Defence in depth: should a parser ever raise, the connection starts over, the capture is
    masked, the error is counted, and every other connection goes on."""
    from tracer.decode import resp

    calls = {"n": 0}
    real = resp.RequestParser.feed

    def flaky(self, data, total):
        calls["n"] += 1
        if calls["n"] == 2:
            raise IndexError("simulated parser bug")
        return real(self, data, total)

    monkeypatch.setattr(resp.RequestParser, "feed", flaky)
    s = Stream()
    s.accept(7, 1)
    s.accept(8, 2)
    s.read(7, cmd("GET", "a"))
    s.write(7, REPLY)
    s.read(8, cmd("AUTH", "hunter2-secret"))   # the parser "fails" here
    s.write(8, b"+OK\r\n")
    s.read(8, cmd("GET", "b"))
    s.write(8, REPLY)
    data = _record(s)
    assert b"hunter2-secret" not in data and calls["n"] >= 2
    calls["n"] = 0
    got = []
    st = Stitcher(on_request=got.append)
    st.feed_raw(s.raw())
    st.finish()
    assert st.stats.parser_errors == 1
    assert [r.key for r in got if r.command == "GET"] == ["a", "b"]


def test_client_gone_mid_reply_reports_the_partial_reply():
    got = []
    st = Stitcher(on_request=got.append)
    s = Stream(capture=4096)
    s.accept(7, 1)
    s.read(7, cmd("GET", "huge"))
    reply = bulk(b"x" * 1_000_000)
    s.write(7, reply[:65536])
    s.write(7, reply[65536:131072])
    s.close(7)                                   # Redis closes the connection: EPIPE on the next write
    s.accept(7, 2)
    s.read(7, cmd("GET", "k"))
    s.write(7, b"$1\r\nv\r\n")
    st.feed_raw(s.raw())
    st.finish()
    assert [(r.key, r.reply_type, r.reply_bytes) for r in got] == [("huge", "partial", 131072), ("k", "ok", 7)]
    assert got[0].latency_ns and st.stats.unanswered == 0
