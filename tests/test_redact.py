"""Redaction: tracer/decode/redact.py with the spans of the RESP parsers.

The property that matters: feed → mask → feed a fresh parser the masked bytes → the same
Commands/Replies, and no secret (nor, without show_values, any value) is left in the masked bytes.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.decode.redact import merge_spans, redact_spans
from tracer.decode.resp import ReplyParser, RequestParser

# RESP_EXAMPLES=5000 for a deeper run
SETTINGS = settings(max_examples=int(os.environ.get("RESP_EXAMPLES", 200)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def mb(*args) -> bytes:
    args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def run(parser, chunks):
    """chunks: (captured, total). Returns (frames, masked chunks)."""
    frames, masked = [], []
    for data, total in chunks:
        got, spans = parser.feed(data, total)
        frames += got
        masked.append((redact_spans(data, spans), total))
    return frames, masked


def split(stream: bytes, cuts) -> list[tuple[bytes, int]]:
    cuts = sorted(set(c for c in cuts if 0 < c < len(stream)))
    bounds = [0] + cuts + [len(stream)]
    return [(stream[a:z], z - a) for a, z in zip(bounds, bounds[1:])]


# -- redact_spans ---------------------------------------------------------------------------
def test_redact_spans_basics():
    assert redact_spans(b"hello world", [(0, 5)]) == b"***** world"
    assert redact_spans(b"hello world", []) == b"hello world"
    assert redact_spans(bytearray(b"abc"), [(1, 1)]) == b"a*c"
    assert redact_spans(memoryview(b"abcdef"), [(4, 10), (-2, 3), (2, 0), (1, -1)]) == b"*bcd**"
    assert redact_spans(b"abcdef", [(1, 2), (2, 3)]) == b"a****f"          # overlapping
    assert redact_spans(b"abc", [(5, 2)]) == b"abc"                        # outside: ignored
    assert len(redact_spans(b"x" * 100, [(10, 500)])) == 100               # length preserved
    assert isinstance(redact_spans(bytearray(b"ab"), [(0, 1)]), bytes)


def test_merge_spans():
    assert merge_spans([(10, 2), (0, 3), (3, 2), (11, 5), (20, 0)]) == [(0, 5), (10, 6)]
    assert merge_spans([]) == []


# -- requests ---------------------------------------------------------------------------------
SESSION = [
    (mb("AUTH", "alice", "Pw-auth-1"), [b"Pw-auth-1"]),
    (mb("HELLO", "3", "AUTH", "bob", "Pw-hello-2", "SETNAME", "conn-1"), [b"Pw-hello-2"]),
    (b"AUTH Pw-inline-3\r\n", [b"Pw-inline-3"]),
    (b'HELLO 3 auth carol "Pw inline 4"\r\n', [b"Pw inline 4"]),
    (mb("CONFIG", "SET", "maxmemory-policy", "allkeys-lru", "requirepass", "Pw-config-5"), [b"Pw-config-5"]),
    (mb("config", "set", "MASTERAUTH", "Pw-config-6"), [b"Pw-config-6"]),
    (mb("ACL", "SETUSER", "dave", "on", ">Pw-acl-7", "~cache:*", "+get"), [b">Pw-acl-7"]),
    (mb("MIGRATE", "10.0.0.2", "6379", "", "0", "5000", "COPY", "AUTH2", "erin", "Pw-migrate-8", "KEYS", "k1", "k2"),
     [b"Pw-migrate-8"]),
    (mb("SET", "user:42", "Value-9", "EX", "60"), []),
    (mb("HSET", "h", "f", "Value-10"), []),
    (b"SET user:43 Value-11\r\n", []),
    (mb("GET", "user:42"), []),
    (mb("EVAL", "return redis.call('get', KEYS[1])", "1", "user:42", "Value-12"), []),
]
STREAM = b"".join(f for f, _ in SESSION)
SECRETS = [s for _, ss in SESSION for s in ss]
VALUES = [b"Value-9", b"Value-10", b"Value-11", b"Value-12", b"allkeys-lru"]
VISIBLE = [b"user:42", b"user:43", b"requirepass", b"MASTERAUTH", b"dave", b"SETNAME", b"KEYS", b"AUTH2"]


@pytest.mark.parametrize("show_values", [False, True])
def test_request_round_trip_at_every_split_point(show_values):
    reference = run(RequestParser(show_values=show_values), [(STREAM, len(STREAM))])[0]
    assert [c.name for c in reference] == ["AUTH", "HELLO", "AUTH", "HELLO", "CONFIG", "CONFIG", "ACL", "MIGRATE",
                                           "SET", "HSET", "SET", "GET", "EVAL"]
    assert [c.key for c in reference] == [None] * 7 + ["k1", "user:42", "h", "user:43", "user:42", "user:42"]
    for i in range(0, len(STREAM) + 1, 3):
        chunks = split(STREAM, [i, i + 17])
        frames, masked = run(RequestParser(show_values=show_values), chunks)
        assert frames == reference, i
        out = b"".join(m for m, _ in masked)
        assert len(out) == len(STREAM)
        for secret in SECRETS:
            assert secret not in out, (i, secret)
        for value in VALUES:
            assert (value in out) == show_values or value == b"allkeys-lru", (i, value)
        for word in VISIBLE:
            assert word in out, (i, word)
        again, masked_again = run(RequestParser(show_values=show_values), masked)
        assert again == reference, i
        assert masked_again == masked            # masking is idempotent


def test_only_payload_bytes_are_masked():
    s = mb("SET", "k", "Value") + mb("AUTH", "pw")
    got, spans = RequestParser().feed(s, len(s))
    assert redact_spans(s, spans) == mb("SET", "k", "*****") + mb("AUTH", "**")


def test_request_round_trip_with_truncated_captures():
    """Partial captures (and the re-synchronisation they cause) decode identically when masked."""
    for cap in (5, 20, 64, 100):
        for read in (30, 64, 200):
            chunks = [(STREAM[p:p + read][:cap], len(STREAM[p:p + read])) for p in range(0, len(STREAM), read)]
            for sv in (False, True):
                frames, masked = run(RequestParser(show_values=sv), chunks)
                assert run(RequestParser(show_values=sv), masked)[0] == frames, (cap, read, sv)
                out = b"".join(m for m, _ in masked)
                for secret in SECRETS:
                    assert secret not in out


token = st.binary(min_size=1, max_size=12).map(lambda b: b.hex().encode())
command = st.one_of(
    token.map(lambda pw: (mb("AUTH", b"S" + pw), [b"S" + pw])),
    st.tuples(token, token).map(lambda t: (mb("AUTH", t[0], b"S" + t[1]), [b"S" + t[1]])),
    token.map(lambda pw: (b"AUTH S" + pw + b"\r\n", [b"S" + pw])),
    token.map(lambda pw: (mb("HELLO", "3", "AUTH", "u", b"S" + pw), [b"S" + pw])),
    st.tuples(st.sampled_from(["requirepass", "masterauth", "MasterUser", "tls-key-file-pass"]), token).map(
        lambda t: (mb("CONFIG", "SET", "maxmemory", "1", t[0], b"S" + t[1]), [b"S" + t[1]])),
    token.map(lambda pw: (mb("ACL", "SETUSER", "u", b">S" + pw), [b"S" + pw])),
    token.map(lambda pw: (mb("MIGRATE", "h", "1", "", "0", "1", "AUTH", b"S" + pw, "KEYS", "k"), [b"S" + pw])),
    st.tuples(token, st.binary(max_size=50)).map(lambda t: (mb("SET", b"key" + t[0], t[1]), [])),
    st.lists(st.binary(max_size=10), max_size=5).map(lambda xs: (mb("FOO", *xs), [])),
)


@SETTINGS
@given(st.lists(command, min_size=1, max_size=10), st.lists(st.integers(0, 2000), max_size=6), st.booleans(),
       st.one_of(st.none(), st.integers(1, 80)))
def test_request_round_trip_property(cmds, cuts, show_values, cap):
    stream = b"".join(f for f, _ in cmds)
    chunks = split(stream, cuts)
    if cap is not None:
        chunks = [(d[:cap], t) for d, t in chunks]
    frames, masked = run(RequestParser(show_values=show_values), chunks)
    assert run(RequestParser(show_values=show_values), masked)[0] == frames
    for m, _ in masked:
        for _, secrets in cmds:
            for s in secrets:
                assert s not in m


# -- replies ----------------------------------------------------------------------------------
REPLIES = (b"+OK\r\n$11\r\nValue-reply\r\n*3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$13\r\nValue-message\r\n"
           b">3\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$4\r\nchan\r\n-ERR wrong 'Value-in-error'\r\n+QUEUED\r\n"
           b"+Value-status\r\n=16\r\ntxt:Value-verbat\r\n%1\r\n$3\r\nkey\r\n$11\r\nValue-map-1\r\n:42\r\n")


@pytest.mark.parametrize("show_values", [False, True])
def test_reply_round_trip(show_values):
    reference = run(ReplyParser(show_values=show_values), [(REPLIES, len(REPLIES))])[0]
    assert [r.head for r in reference] == [None, None, "message", "pmessage", None, None, None, None, None, None]
    assert reference[4].error == "ERR"
    for i in range(len(REPLIES) + 1):
        chunks = split(REPLIES, [i, i + 9])
        frames, masked = run(ReplyParser(show_values=show_values), chunks)
        assert frames == reference
        out = b"".join(m for m, _ in masked)
        for value in (b"Value-reply", b"Value-message", b"Value-status", b"Value-verbat", b"Value-map-1"):
            assert (value in out) == show_values, (i, value)
        for word in (b"+OK", b"message", b"pmessage", b"Value-in-error", b"+QUEUED", b"txt:", b":42"):
            assert word in out, (i, word)
        assert run(ReplyParser(show_values=show_values), masked)[0] == reference


def test_reply_round_trip_through_desync_and_resync():
    s = b"*4\r\n" + b"".join(b"$10\r\nValue-%04d\r\n" % i for i in range(4)) + b"+OK\r\n"
    chunks = [(s[:20], 40), (s[40:50], len(s) - 45), (s[-5:], 5)]

    def go(parser, chunks):
        frames, masked = [], []
        for i, (data, total) in enumerate(chunks):
            if i == 2:
                frames.append(parser.resync())
            got, spans = parser.feed(data, total)
            frames += got
            masked.append((redact_spans(data, spans), total))
        return frames, masked

    frames, masked = go(ReplyParser(), chunks)
    assert [(r.type, r.complete) for r in frames] == [("ok", False), ("ok", True)]
    assert sum(r.size for r in frames) == len(s)
    assert b"Value" not in b"".join(m for m, _ in masked)
    assert go(ReplyParser(), masked)[0] == frames


@pytest.mark.parametrize("show_values", [False, True])
def test_invalidation_push_keys_survive_masking_values_do_not(show_values):
    """CLIENT TRACKING: the keys of an invalidation push (RESP3) or of an __redis__:invalidate message
    (RESP2 redirect) are kept like request keys, so the masked recording decodes to the same keys;
    values around them stay masked."""
    stream = (b"$11\r\nValue-reply\r\n"
              b">2\r\n$10\r\ninvalidate\r\n*2\r\n$8\r\nuser:123\r\n$3\r\nk:2\r\n"
              b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$8\r\nuser:123\r\n"
              b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$13\r\nValue-message\r\n"
              b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$13\r\nValue-message\r\n"
              b">2\r\n$10\r\ninvalidate\r\n_\r\n")
    reference = run(ReplyParser(show_values=show_values), [(stream, len(stream))])[0]
    assert [r.keys for r in reference] == [None, ["user:123", "k:2"], ["user:123"], None, None, None]
    assert [r.type for r in reference] == ["ok", "push", "ok", "ok", "ok", "push"]
    for i in range(len(stream) + 1):
        frames, masked = run(ReplyParser(show_values=show_values), split(stream, [i, i + 7]))
        assert frames == reference, i
        out = b"".join(m for m, _ in masked)
        assert (b"Value" in out) == show_values, i
        assert out.count(b"user:123") == 2 and b"k:2" in out and out.count(b"__redis__:invalidate") == 2, i
        assert run(ReplyParser(show_values=show_values), masked)[0] == reference, i


def test_invalidation_key_cut_by_the_capture_is_marked_cut():
    head = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$600\r\n"
    stream = head + b"k" * 600 + b"\r\n"
    (reply,), _ = run(ReplyParser(), [(stream[:100], len(stream))])
    assert reply.keys == ["k" * (100 - len(head)) + "…"] and not reply.complete


def test_a_full_resync_rdb_is_masked_whole_and_the_stream_after_it_is_left_to_the_parser():
    from tracer.decode.links import SyncTransfer
    # disk-based transfer: "$<len>" then the RDB, split over two writes, then the command stream
    t = SyncTransfer()
    first = b"+FULLRESYNC 8de1 0\r\n\n$13\r\nREDIS0010val"
    used, spans = t.feed(first, len(first))
    assert used == len(first) and redact_spans(first, spans) == b"+FULLRESYNC 8de1 0\r\n\n$13\r\n" + b"*" * 12
    second = b"X*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n"
    used, spans = t.feed(second, len(second))
    assert used == 1 and spans == [(0, 1)] and t.left == 0
    used, spans = t.feed(second[1:], len(second) - 1)
    assert (used, spans, t.done) == (0, [], True)
    # diskless: "$EOF:<40-byte mark>", bytes up to the mark masked, the mark kept (a replay finds it)
    mark = b"m" * 40
    t = SyncTransfer()
    data = b"$EOF:" + mark + b"\r\nREDIS0010secretvalue" + mark + b"*1\r\n$4\r\nPING\r\n"
    used, spans = t.feed(data, len(data))
    shown = redact_spans(data, spans)
    assert b"secretvalue" not in shown and shown.count(mark) == 2
    assert data[used:] == b"*1\r\n$4\r\nPING\r\n"
    # a diskless RDB whose end mark lies past a capture: the replica's REPLCONF ACK ends the transfer
    t = SyncTransfer()
    head = b"$EOF:" + mark + b"\r\n"
    used, spans = t.feed(head + b"REDIS0010...", len(head) + 16384)    # 16 KiB written, 4 KiB captured
    assert used == len(head) + 16384 and spans == [(len(head), 16384)]
    t.replica_spoke()
    stream = b"*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n"
    assert t.feed(stream, len(stream)) == (0, [])
