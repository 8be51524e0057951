"""RESP decoding from truncated captures: tracer/resp.py and tracer/keyspec.py (root-free)."""
from __future__ import annotations

import os
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.keyspec import show
from tracer.redact import redact_spans
from tracer.resp import INLINE_MAX, Command, Reply, ReplyParser, RequestParser, split_inline

# RESP_EXAMPLES=5000 for a deeper run
SETTINGS = settings(max_examples=int(os.environ.get("RESP_EXAMPLES", 300)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# -- helpers ------------------------------------------------------------------------------------
def b(x) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


def mb(*args) -> bytes:
    """A multibulk request frame."""
    args = [b(a) for a in args]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def quoted(arg: bytes) -> bytes:
    """An inline argument in double quotes, every non-alphanumeric byte as \\xHH."""
    return b'"' + b"".join(bytes([c]) if c < 128 and (chr(c).isalnum() or c in b"-_:.") else b"\\x%02x" % c
                           for c in arg) + b'"'


def feed_chunks(parser, chunks):
    """chunks: bytes (fully captured) or (captured, total). Returns (items, [spans per chunk])."""
    items, spans = [], []
    for c in chunks:
        data, total = c if isinstance(c, tuple) else (c, len(c))
        got, sp = parser.feed(data, total)
        for off, ln in sp:
            assert ln > 0 and 0 <= off and off + ln <= len(data), (sp, len(data))
        items += got
        spans.append(sp)
    return items, spans


def split(stream: bytes, cuts) -> list[bytes]:
    cuts = sorted(set(c for c in cuts if 0 < c < len(stream)))
    bounds = [0] + cuts + [len(stream)]
    return [stream[a:z] for a, z in zip(bounds, bounds[1:])]


def parse(stream: bytes, cls=RequestParser, **kw):
    return feed_chunks(cls(**kw), [stream])[0]


def masked_chunks(chunks, spans):
    out = []
    for c, sp in zip(chunks, spans):
        if isinstance(c, tuple):
            out.append((redact_spans(c[0], sp), c[1]))
        else:
            out.append(redact_spans(c, sp))
    return out


def req_accounted(p: RequestParser, items) -> int:
    return sum(c.size for c in items) + p.ignored + p.undecodable + p.lost + p.frame_bytes


# -- requests: basics -------------------------------------------------------------------------
def test_get_set_fields():
    s = mb("SET", "user:1", "hello") + mb("GET", "user:1")
    p = RequestParser()
    cmds, spans = p.feed(s, len(s))
    assert cmds == [Command("SET", None, "user:1", 3, len(mb("SET", "user:1", "hello")), True, False),
                    Command("GET", None, "user:1", 2, len(mb("GET", "user:1")), True, False)]
    assert redact_spans(s, spans) == s.replace(b"hello", b"*****")
    assert not p.pending and p.desyncs == 0 and p.undecodable == 0


def test_lower_case_and_unknown_commands():
    cmds = parse(mb("get", "k") + mb("Json.Set", "doc", "$", "{}") + mb("FOO") + mb("x\x00y", "k2"))
    assert [(c.name, c.key, c.argc) for c in cmds] == [
        ("GET", "k", 2), ("JSON.SET", "doc", 4), ("FOO", None, 1), ("X\\x00Y", "k2", 2)]


def test_show_values_keeps_values():
    s = mb("SET", "k", "v1") + mb("AUTH", "pw")
    cmds, spans = RequestParser(show_values=True).feed(s, len(s))
    assert redact_spans(s, spans) == s.replace(b"$2\r\npw", b"$2\r\n**")
    assert [c.name for c in cmds] == ["SET", "AUTH"]


def test_pipeline_of_many_commands_in_one_read():
    frames = [mb("SET", f"k{i}", "x" * i) if i % 2 else mb("GET", f"k{i}") for i in range(200)]
    s = b"".join(frames)
    p = RequestParser()
    cmds, _ = p.feed(s, len(s))
    assert [c.size for c in cmds] == [len(f) for f in frames]
    assert [c.key for c in cmds] == [f"k{i}" for i in range(200)]


def test_payload_containing_crlf_and_star():
    s = mb("SET", "k", "a\r\n*1\r\n$4\r\nPING\r\n") + mb("GET", "k")
    cmds = parse(s)
    assert [(c.name, c.size) for c in cmds] == [("SET", len(s) - len(mb("GET", "k"))), ("GET", len(mb("GET", "k")))]


def test_many_arguments_leave_the_fast_path():
    s = mb("MSET", *[f"k{i}" for i in range(500)]) + mb("DEL", "a", "b")
    cmds = parse(s)
    assert [(c.name, c.key, c.argc) for c in cmds] == [("MSET", "k0", 501), ("DEL", "a", 3)]
    assert sum(c.size for c in cmds) == len(s)


def test_inline_commands():
    s = b"PING\r\nSET a b\nget  \t a\r\n\r\n\n   \r\nECHO hi\r\n"
    p = RequestParser()
    cmds, spans = p.feed(s, len(s))
    assert [(c.name, c.key, c.argc, c.inline, c.size) for c in cmds] == [
        ("PING", None, 1, True, 6), ("SET", "a", 3, True, 8), ("GET", "a", 2, True, 10),
        ("ECHO", None, 2, True, 9)]
    assert p.ignored == 2 + 1 + 5
    assert redact_spans(s, spans) == b"PING\r\nSET a *\nget  \t a\r\n\r\n\n   \r\nECHO **\r\n"


def test_inline_quotes_like_sdssplitargs():
    line = b'SET "a b\\x41\\n" \'it\\\'s\' plain'
    toks, err = split_inline(line)
    assert not err
    assert [t[0] for t in toks] == [b"SET", b"a bA\n", b"it's", b"plain"]
    cmds, spans = RequestParser().feed(line + b"\r\n", len(line) + 2)
    assert cmds[0].key == "a bA\\x0a" and cmds[0].argc == 4
    assert redact_spans(line, spans) == b'SET "a b\\x41\\n" \'*****\' *****'
    assert split_inline(b'SET "abc"def')[1] is True      # closing quote must be followed by a space
    assert split_inline(b'SET "abc')[1] is True          # unbalanced
    toks, err = split_inline(b"\x00AUTH\x00pw c")   # Redis cannot find the end of a line holding NUL
    assert err and [t[0] for t in toks] == [b"AUTH", b"pw", b"c"]
    cmds, spans = RequestParser(show_values=True).feed(b"\x00AUTH pw\r\nGET k\r\n", 16)
    assert [c.name for c in cmds] == ["?", "GET"] and spans == [(6, 2)]


def test_inline_protocol_errors():
    p = RequestParser()
    s = b'SET "abc\r\nGET k\r\n'
    cmds, _ = p.feed(s, len(s))
    assert [(c.name, c.complete, c.inline) for c in cmds] == [("?", False, True), ("GET", True, True)]
    # an inline line longer than 64 KiB is a protocol error; the stream is then re-synchronised
    p = RequestParser()
    big = b"SET k " + b"x" * (INLINE_MAX + 10)
    items, _ = feed_chunks(p, split(big, range(4096, len(big), 4096)) + [b"\r\n" + mb("GET", "k")])
    assert items[0].name == "?" and not items[0].complete
    assert items[-1] == Command("GET", None, "k", 2, len(mb("GET", "k")), True, False)
    assert p.desyncs == 1 and len(p._line) == 0


def test_empty_multibulk_is_ignored():
    p = RequestParser()
    s = b"*0\r\n*-1\r\n" + mb("PING")
    cmds, _ = p.feed(s, len(s))
    assert [c.name for c in cmds] == ["PING"] and p.ignored == 9


STREAM = (mb("SET", "k\x00\xff", "v" * 10) + b"PING\r\n" + mb("AUTH", "user", "S3cret")
          + b'hello 3 auth bob "Pw 2" setname x\r\n' + mb("CONFIG", "SET", "maxmemory", "1gb", "requirepass", "S3c")
          + b"\r\n" + mb("EVAL", "return 1", "1", "kk", "arg") + b"*0\r\n" + mb("GET", "x" * 300))


@pytest.mark.parametrize("show_values", [False, True])
def test_every_split_point_gives_the_same_commands(show_values):
    whole, spans = feed_chunks(RequestParser(show_values=show_values), [STREAM])
    masked_whole = redact_spans(STREAM, spans[0])
    assert len(whole) == 7 and sum(c.size for c in whole) == len(STREAM) - 2 - 4
    for i in range(len(STREAM) + 1):
        for j in (i, min(len(STREAM), i + 1), min(len(STREAM), i + 7)):
            chunks = split(STREAM, [i, j])
            p = RequestParser(show_values=show_values)
            items, sp = feed_chunks(p, chunks)
            assert items == whole, (i, j)
            assert b"".join(masked_chunks(chunks, sp)) == masked_whole, (i, j)
            assert not p.pending and p.desyncs == 0


def test_byte_by_byte():
    p = RequestParser()
    items, _ = feed_chunks(p, [STREAM[i:i + 1] for i in range(len(STREAM))])
    assert items == parse(STREAM)


# -- requests: keys ----------------------------------------------------------------------------
KEYSPEC = [
    (["GET", "k"], "GET", None, "k"),
    (["HSET", "h", "f", "v"], "HSET", None, "h"),
    (["PING"], "PING", None, None),
    (["PING", "msg"], "PING", None, None),
    (["ECHO", "hello"], "ECHO", None, None),
    (["INFO", "memory"], "INFO", None, None),
    (["AUTH", "pw"], "AUTH", None, None),
    (["HELLO", "3"], "HELLO", None, None),
    (["SELECT", "2"], "SELECT", None, None),
    (["DBSIZE"], "DBSIZE", None, None),
    (["FLUSHALL", "ASYNC"], "FLUSHALL", None, None),
    (["FLUSHDB"], "FLUSHDB", None, None),
    (["KEYS", "user:*"], "KEYS", None, None),
    (["SCAN", "0", "MATCH", "u*"], "SCAN", None, None),
    (["MULTI"], "MULTI", None, None),
    (["EXEC"], "EXEC", None, None),
    (["DISCARD"], "DISCARD", None, None),
    (["client", "list"], "CLIENT", "LIST", None),
    (["CLIENT", "SETNAME", "x"], "CLIENT", "SETNAME", None),
    (["CONFIG", "GET", "maxmemory"], "CONFIG", "GET", None),
    (["CLUSTER", "KEYSLOT", "k"], "CLUSTER", "KEYSLOT", None),
    (["COMMAND", "DOCS", "get"], "COMMAND", "DOCS", None),
    (["SUBSCRIBE", "ch1", "ch2"], "SUBSCRIBE", None, None),
    (["PUBLISH", "ch", "msg"], "PUBLISH", None, None),
    (["DEBUG", "SLEEP", "0"], "DEBUG", "SLEEP", None),
    (["SCRIPT", "LOAD", "return 1"], "SCRIPT", "LOAD", None),
    (["FUNCTION", "LIST"], "FUNCTION", "LIST", None),
    (["MONITOR"], "MONITOR", None, None),
    (["SLOWLOG", "GET", "10"], "SLOWLOG", "GET", None),
    (["LATENCY", "LATEST"], "LATENCY", "LATEST", None),
    (["ACL", "WHOAMI"], "ACL", "WHOAMI", None),
    (["MEMORY", "USAGE", "k", "SAMPLES", "5"], "MEMORY", "USAGE", "k"),
    (["MEMORY", "DOCTOR"], "MEMORY", "DOCTOR", None),
    (["OBJECT", "ENCODING", "k"], "OBJECT", "ENCODING", "k"),
    (["OBJECT", "HELP"], "OBJECT", "HELP", None),
    (["XINFO", "STREAM", "s"], "XINFO", "STREAM", "s"),
    (["XINFO", "HELP"], "XINFO", "HELP", None),
    (["XGROUP", "CREATE", "s", "g", "$"], "XGROUP", "CREATE", "s"),
    (["EVAL", "return 1", "1", "k", "a"], "EVAL", None, "k"),
    (["EVAL", "return 1", "0", "a"], "EVAL", None, None),
    (["EVALSHA", "abc", "2", "k1", "k2"], "EVALSHA", None, "k1"),
    (["EVAL_RO", "s", "1", "k"], "EVAL_RO", None, "k"),
    (["FCALL", "f", "1", "k", "a"], "FCALL", None, "k"),
    (["FCALL_RO", "f", "0"], "FCALL_RO", None, None),
    (["XREAD", "COUNT", "10", "BLOCK", "0", "STREAMS", "s1", "s2", "0", "0"], "XREAD", None, "s1"),
    (["XREADGROUP", "GROUP", "streams", "STREAMS", "COUNT", "1", "STREAMS", "s", ">"], "XREADGROUP", None, "s"),
    (["BLPOP", "l1", "l2", "0"], "BLPOP", None, "l1"),
    (["BZPOPMIN", "z", "0"], "BZPOPMIN", None, "z"),
    (["MIGRATE", "h", "6379", "k", "0", "5000"], "MIGRATE", None, "k"),
    (["MIGRATE", "h", "6379", "", "0", "5000", "COPY", "AUTH", "KEYS", "KEYS", "a", "b"], "MIGRATE", None, "a"),
    (["BITOP", "AND", "dest", "a", "b"], "BITOP", None, "dest"),
    (["SORT", "k", "BY", "x"], "SORT", None, "k"),
    (["ZUNIONSTORE", "d", "2", "a", "b"], "ZUNIONSTORE", None, "d"),
    (["LMPOP", "2", "a", "b", "LEFT"], "LMPOP", None, "a"),
    (["ZMPOP", "1", "z", "MIN"], "ZMPOP", None, "z"),
    (["SINTERCARD", "2", "a", "b"], "SINTERCARD", None, "a"),
    (["BLMPOP", "0", "2", "a", "b", "LEFT"], "BLMPOP", None, "a"),
    (["FOO", "bar", "baz"], "FOO", None, "bar"),
    (["GET"], "GET", None, None),
]


@pytest.mark.parametrize("args,name,sub,key", KEYSPEC, ids=[" ".join(k[0])[:40] for k in KEYSPEC])
def test_keyspec(args, name, sub, key):
    for frame in (mb(*args), b" ".join(quoted(b(a)) if i else b(a) for i, a in enumerate(args)) + b"\r\n"):
        (cmd,) = parse(frame)
        assert (cmd.name, cmd.sub, cmd.key, cmd.argc) == (name, sub, key, len(args))


def test_key_display():
    assert parse(mb("GET", b"a\x00\xffb\n"))[0].key == "a\\x00\\xffb\\x0a"
    assert parse(mb("GET", "clé:用户"))[0].key == "clé:用户"
    long = parse(mb("GET", "k" * 300))[0].key
    assert long == "k" * 128 + "…"
    assert parse(mb("GET", "k" * 128))[0].key == "k" * 128
    assert parse(mb("GET", "k" * 100000))[0].key == "k" * 128 + "…"
    # a key whose tail was not captured
    s = mb("SET", "abcdef", "v")
    p = RequestParser()
    (cmd,) = feed_chunks(p, [(s[:20], 24), s[24:]])[0]
    assert cmd.key == "abc…" and not cmd.complete and cmd.size == len(s)
    assert show(b"\t") == "\\x09"


# -- requests: secrets and values -------------------------------------------------------------
SECRETS = [
    (["AUTH", "Pw-0001"], ["Pw-0001"]),
    (["auth", "usr-0002", "Pw-0002"], ["usr-0002", "Pw-0002"]),
    (["HELLO", "3", "AUTH", "usr-0003", "Pw-0003", "SETNAME", "conn"], ["usr-0003", "Pw-0003"]),
    (["HELLO", "AUTH", "usr-0004", "Pw-0004"], ["usr-0004", "Pw-0004"]),
    (["MIGRATE", "h", "6379", "", "0", "5000", "AUTH", "Pw-0005", "KEYS", "a"], ["Pw-0005"]),
    (["MIGRATE", "h", "6379", "k", "0", "5000", "REPLACE", "AUTH2", "usr-0006", "Pw-0006"], ["usr-0006", "Pw-0006"]),
    (["CONFIG", "SET", "requirepass", "Pw-0007"], ["Pw-0007"]),
    (["config", "set", "maxmemory", "1gb", "MasterAuth", "Pw-0008", "masteruser", "usr-0008"], ["Pw-0008", "usr-0008"]),
    (["CONFIG", "SET", "tls-key-file-pass", "Pw-0009", "primaryauth", "Pw-0010"], ["Pw-0009", "Pw-0010"]),
    (["ACL", "SETUSER", "alice", "on", ">Pw-0011", "~*", "+@all"], ["on", ">Pw-0011", "~*", "+@all"]),
    (["SENTINEL", "SET", "mymaster", "auth-pass", "Pw-0012"], ["Pw-0012"]),
    (["SENTINEL", "CONFIG", "SET", "sentinel-pass", "Pw-0013"], ["Pw-0013"]),
    # rename-command CONFIG/ACL/SENTINEL: a name the table does not know, the same secrets
    (["cfg_9f8e", "SET", "requirepass", "Pw-0014"], ["Pw-0014"]),
    (["cfg_9f8e", "set", "maxmemory", "1gb", "MasterAuth", "Pw-0015", "masteruser", "usr-0015"],
     ["Pw-0015", "usr-0015"]),
    (["acl_7c1d", "SETUSER", "alice", "on", ">Pw-0016", "<Pw-0017", "#5e884898da28047151d0e56f8dc629",
      "!a1b2c3d4e5f60718293a4b5c6d7e8f90"], [">Pw-0016", "<Pw-0017", "#5e884898da28047151d0e56f8dc629",
                                             "!a1b2c3d4e5f60718293a4b5c6d7e8f90"]),
    (["sen_4b2a", "SET", "mymaster", "auth-pass", "Pw-0018"], ["Pw-0018"]),
    (["sen_4b2a", "CONFIG", "SET", "sentinel-pass", "Pw-0019"], ["Pw-0019"]),
]


def test_secret_replies_whatever_the_command_is_called():
    from tracer.keyspec import secret_reply

    for command in ("CONFIG GET", "ACL GETUSER", "ACL LIST", "SENTINEL MASTERS", "?",
                    "CFG_9F8E GET", "CFG_9F8E CONFIG", "ACL_7C1D GETUSER", "ACL_7C1D LIST"):
        assert secret_reply(command), command
    for command in ("GET", "HGET", "CONFIG SET", "CLIENT LIST", "MYMODULE.GET", "FT.SEARCH"):
        assert not secret_reply(command), command
    # renamed: argv[1] is read as the subcommand (so the reply is recognised), not as a key
    s = mb("cfg_9f8e", "GET", "requirepass") + mb("mymodule.get", "k1")
    assert [(c.name, c.sub, c.key) for c in RequestParser().feed(s, len(s))[0]] == [
        ("CFG_9F8E", "GET", None), ("MYMODULE.GET", None, "k1")]


@pytest.mark.parametrize("show_values", [False, True])
@pytest.mark.parametrize("args,secrets", SECRETS, ids=[" ".join(s[0])[:40] for s in SECRETS])
def test_secrets_are_always_masked(args, secrets, show_values):
    frames = [mb(*args), b" ".join(quoted(b(a)) if i else b(a) for i, a in enumerate(args)) + b"\r\n"]
    stream = b"".join(frames)
    for chunks in ([stream], split(stream, [7, 30, 31, 55]), [stream[i:i + 1] for i in range(len(stream))]):
        p = RequestParser(show_values=show_values)
        items, spans = feed_chunks(p, chunks)
        out = b"".join(masked_chunks(chunks, spans))
        for s in secrets:
            if s not in ("on", "~*"):
                assert b(s) not in out, s
            assert all(b(s) not in (c.key or "").encode() for c in items)
        assert len(out) == len(stream)
        assert items == feed_chunks(RequestParser(show_values=show_values), masked_chunks(chunks, spans))[0]
        assert items[0].name == args[0].upper() and items[0].key in (None, "a", "k")
        keyword = {"CONFIG": args[2] if len(args) > 2 else None, "ACL": "alice"}.get(args[0].upper())
        if keyword:  # parameter names and the ACL user name stay visible
            assert out.count(b(keyword)) == 2


def test_values_after_the_key_are_masked_but_never_headers_names_keys():
    s = mb("XADD", "stream", "*", "field", "value") + mb("XREAD", "COUNT", "5", "STREAMS", "s", "0")
    cmds, spans = RequestParser().feed(s, len(s))
    out = redact_spans(s, spans)
    assert out == (mb("XADD", "stream", "*", "*****", "*****") + mb("XREAD", "COUNT", "5", "STREAMS", "s", "*"))
    assert [c.key for c in cmds] == ["stream", "s"]
    s = mb("PUBLISH", "chan", "payload") + mb("EVAL", "return 1", "0", "argv1")
    assert redact_spans(s, RequestParser().feed(s, len(s))[1]) == mb("PUBLISH", "chan", "*******") + mb(
        "EVAL", "return 1", "0", "*****")


def test_secret_split_across_reads_and_uncaptured_name():
    # AUTH's name split from its argument; the secret spans both reads
    s = mb("AUTH", "Pw-long-secret")
    chunks = split(s, [12, 25])
    items, spans = feed_chunks(RequestParser(show_values=True), chunks)
    assert b"".join(masked_chunks(chunks, spans)) == s.replace(b"Pw-long-secret", b"*" * 14)
    # the name payload is only partly captured: everything after it is treated as a secret
    p = RequestParser(show_values=True)
    items, spans = feed_chunks(p, [(s[:10], 12), s[12:]])
    assert items == [Command("?", None, None, 2, len(s), False, False)]
    assert b"Pw-long" not in redact_spans(s[12:], spans[1])


# -- requests: large values and truncated captures ---------------------------------------------
def capture(stream: bytes, read_sizes, cap: int):
    """Split a stream into reads of the given sizes, each captured up to `cap` bytes."""
    chunks, pos, i = [], 0, 0
    while pos < len(stream):
        size = read_sizes[i % len(read_sizes)]
        i += 1
        read = stream[pos:pos + size]
        chunks.append((read[:cap], len(read)))
        pos += len(read)
    return chunks


def test_512mb_value_is_skipped_without_buffering():
    n = 512 * 1024 * 1024
    head = b"*3\r\n$3\r\nSET\r\n$9\r\nbig:value\r\n$%d\r\n" % n
    p = RequestParser()
    got, spans = p.feed(head + b"x" * (4096 - len(head)), 16384)
    assert got == [] and p.pending and spans == [(len(head), 4096 - len(head))]
    remaining = n + 2 - (16384 - len(head))
    read = 256 * 1024
    t0 = time.perf_counter()
    feeds = 0
    while remaining > read:
        got, spans = p.feed(b"x" * 4096, read)
        assert got == [] and spans == [(0, 4096)]
        remaining -= read
        feeds += 1
        assert len(p._line) == 0 and (p._abuf is None or len(p._abuf) <= 520)
    got, spans = p.feed(b"x" * (remaining - 2) + b"\r\n" + mb("GET", "k"), remaining + len(mb("GET", "k")))
    assert feeds > 2000 and time.perf_counter() - t0 < 10
    assert got == [Command("SET", None, "big:value", 3, len(head) + n + 2, False, False),
                   Command("GET", None, "k", 2, len(mb("GET", "k")), True, False)]
    assert p.desyncs == 0


def test_bulk_over_max_bulk_is_a_protocol_error():
    n = 512 * 1024 * 1024
    s = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (n + 1)
    p = RequestParser()
    got, _ = p.feed(s + b"xxxx", len(s) + 4)
    assert [(c.name, c.complete) for c in got] == [("?", False)]
    assert p.oversized == 1 and p.desyncs == 1
    got, _ = p.feed(mb("GET", "k"), len(mb("GET", "k")))
    assert [c.name for c in got] == ["GET"]
    ok = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % n
    assert RequestParser().feed(ok, len(ok))[0] == [] and RequestParser(max_bulk=10).feed(ok, len(ok))[0][0].name == "?"


@pytest.mark.parametrize("garbage", [b"*abc\r\n", b"*3\r\n$-5\r\n", b"*3\r\n:1\r\n", b"*1\r\n$x\r\n",
                                     b"*99999999999\r\n", b"*2\r\n$3\r\nGET\r\n$", b"*" + b"9" * 40])
def test_garbage_then_recovery(garbage):
    p = RequestParser()
    s = garbage + b"\r\n" + mb("GET", "k")
    items, _ = feed_chunks(p, [s])
    assert items[-1] == Command("GET", None, "k", 2, len(mb("GET", "k")), True, False)
    assert req_accounted(p, items) == len(s)


def test_header_cut_then_resync_at_offset_zero():
    a, g, c = mb("SET", "k", "v"), mb("GET", "key1"), mb("INCR", "n")
    read1 = a + g
    cap = len(a) + 12                       # ends inside GET's second header
    p = RequestParser()
    got, _ = p.feed(read1[:cap], len(read1))
    assert got == [Command("SET", None, "k", 3, len(a), True, False),
                   Command("GET", None, None, 2, len(g), False, False)]
    assert p.desyncs == 1 and not p.pending and p.desynced
    got, _ = p.feed(c, len(c))              # the next read starts at a frame boundary
    assert got == [Command("INCR", None, "n", 2, len(c), True, False)] and p.undecodable == 0
    assert req_accounted(p, [*parse(a), Command(size=len(g)), *got]) == len(read1) + len(c)


def test_header_cut_then_resync_by_scanning():
    frames = [mb("MSET", *[f"key{i}" for i in range(40)])]
    read1 = frames[0][:300]
    read2 = frames[0][300:] + mb("GET", "after")
    p = RequestParser()
    got, _ = p.feed(read1[:200], len(read1))
    assert got == [Command("MSET", None, "key0", 41, 300, False, False)]
    got, spans = p.feed(read2, len(read2))
    assert got == [Command("GET", None, "after", 2, len(mb("GET", "after")), True, False)]
    assert p.undecodable == len(frames[0]) - 300 and p.desyncs == 1
    assert spans[0] == (0, len(frames[0]) - 300)    # skipped bytes are masked
    assert req_accounted(p, [Command(size=300), *got]) == len(read1) + len(read2)


def test_inline_resync_and_cut():
    p = RequestParser()
    got, _ = p.feed(b"SET k", 20)
    assert got == [Command("SET", None, "k…", 2, 20, False, True)]
    got, spans = p.feed(b"SET k v\r\n", 9)  # plausible inline command at offset 0: maybe a line's tail
    assert got == [Command("SET", None, None, 3, 9, False, True)] and spans == [(4, 1), (6, 1)]
    got, _ = p.feed(b"PING\r\n", 6)
    assert got == [Command("PING", None, None, 1, 6, True, True)]
    got, _ = p.feed(b"GET a\r\n", 30)        # boundary, then lost bytes
    got, _ = p.feed(b"lue\r\nGET b\r\n", 12)   # no request start at 0: scan for "\n<known command>"
    assert got == [Command("GET", None, "b", 2, 7, True, True)] and p.undecodable == 5
    assert p.desyncs == 2


def test_inline_resync_rejects_multibulk_fragments():
    """A client that spoke inline may switch to multibulk in lost bytes: bulk payloads that look
    like command names are not taken for inline commands (their neighbours are $ headers)."""
    p = RequestParser()
    assert p.feed(b"PING\r\n", 100)[0][0].name == "PING"
    tail = b"AUTH\r\n$8\r\nPw-12345\r\n*2\r\n$4\r\nAUTH\r\n$8\r\nPw-67890\r\n"
    got, spans = p.feed(tail, len(tail))
    assert [c.name for c in got] == ["AUTH"] and b"Pw-" not in redact_spans(tail, spans)
    p = RequestParser()
    assert p.feed(b"PING\r\n", 100)[0][0].name == "PING"
    tail = b"xx\r\n$4\r\nAUTH\r\n$8\r\nPw-12345\r\n"
    got, spans = p.feed(tail, len(tail))
    assert got == [] and redact_spans(tail, spans) == b"*" * len(tail)
    # once a connection has sent multibulk, lost bytes are never re-read as inline commands
    p = RequestParser()
    assert p.feed(mb("PING"), 100)[0][0].name == "PING"
    assert p.feed(b"GET k\r\n", 7) == ([], [(0, 7)])


def test_value_cut_gap_inside_the_same_value_is_exact():
    s = mb("SET", "k", "v" * 10000)
    chunks = capture(s, [4000, 3000, 5000], 1000) + [mb("GET", "k")]
    p = RequestParser()
    items, spans = feed_chunks(p, chunks)
    assert items == [Command("SET", None, "k", 3, len(mb("SET", "k", "v" * 10000)), False, False),
                     Command("GET", None, "k", 2, len(mb("GET", "k")), True, False)]
    assert p.desyncs == 0 and p.lost == 0
    for (data, _), sp in zip(chunks[:-1], spans):
        assert b"v" not in redact_spans(data, sp)


def test_last_value_cut_and_frame_end_in_gap():
    a = mb("SET", "k", "v" * 100)
    s = a + mb("GET", "lost")
    p = RequestParser()
    got, _ = p.feed(s[:50], len(s))
    assert got == [Command("SET", None, "k", 3, len(a), False, False)]   # exact size, despite the gap
    assert p.desyncs == 1 and p.lost == len(mb("GET", "lost"))


def test_gap_after_cr_and_in_crlf():
    s = mb("SET", "key", "value") + mb("GET", "x")
    for cap in range(len(s) - len(mb("GET", "x"))):
        p = RequestParser()
        items, _ = feed_chunks(p, [(s[:cap], len(mb("SET", "key", "value"))), mb("GET", "x")])
        assert items[-1] == Command("GET", None, "x", 2, len(mb("GET", "x")), True, False), cap
        assert req_accounted(p, items) == len(s)


def test_memoryview_and_bytearray_input():
    s = mb("GET", "k")
    assert RequestParser().feed(memoryview(s), len(s))[0] == RequestParser().feed(bytearray(s), len(s))[0]


# -- requests: property tests -----------------------------------------------------------------
NAMES = ["GET", "SET", "MSET", "AUTH", "HELLO", "CONFIG", "ACL", "MIGRATE", "EVAL", "XREAD", "PING", "PUBLISH",
         "FOO", "CLIENT", "OBJECT", "sEt", "XREADGROUP", "SENTINEL", "MEMORY"]
WORDS = ["SET", "AUTH", "AUTH2", "KEYS", "STREAMS", "GROUP", "SETUSER", "requirepass", "COUNT", "1", "0", "USAGE"]
arg_st = st.one_of(st.binary(max_size=24), st.sampled_from(WORDS).map(str.encode),
                   st.binary(min_size=0, max_size=3000).filter(lambda x: len(x) > 600))
cmd_st = st.tuples(st.sampled_from(NAMES).map(str.encode), st.lists(arg_st, max_size=7), st.sampled_from("mqp"))


def encode_cmd(name, args, mode):
    if mode == "m" or (mode == "p" and any(not a or not a.isalnum() for a in args)):
        return mb(name, *args)
    if mode == "q":
        return b" ".join([name] + [quoted(a) for a in args]) + b"\r\n"
    return b" ".join([name] + args) + b"\n"


@SETTINGS
@given(st.lists(cmd_st, min_size=1, max_size=12), st.lists(st.integers(0, 30000), max_size=8),
       st.booleans())
def test_valid_streams_parse_independently_of_splits(cmds, cuts, show_values):
    frames = [encode_cmd(*c) for c in cmds]
    stream = b"".join(frames)
    whole, spans = feed_chunks(RequestParser(show_values=show_values), [stream])
    assert [c.size for c in whole] == [len(f) for f in frames]
    assert [c.argc for c in whole] == [len(c[1]) + 1 for c in cmds]
    assert [c.name for c in whole] == [c[0].decode().upper() for c in cmds]
    assert all(c.complete for c in whole)
    chunks = split(stream, cuts)
    p = RequestParser(show_values=show_values)
    items, sp = feed_chunks(p, chunks)
    assert items == whole
    assert b"".join(masked_chunks(chunks, sp)) == redact_spans(stream, spans[0])
    assert p.desyncs == 0 and p.undecodable == 0 and not p.pending
    # redaction round trip: the masked stream decodes to the same commands
    assert feed_chunks(RequestParser(show_values=show_values), masked_chunks(chunks, sp))[0] == whole


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6), st.lists(st.integers(0, 50), max_size=6))
def test_random_bytes_never_raise(data, cuts, gaps):
    for p in (RequestParser(), RequestParser(show_values=True, max_bulk=100)):
        chunks = split(data, cuts)
        chunks = [(c, len(c) + (gaps[i] if i < len(gaps) else 0)) for i, c in enumerate(chunks)]
        items, _ = feed_chunks(p, chunks)
        assert req_accounted(p, items) == sum(t for _, t in chunks)
        for c in items:
            assert c.size > 0 and isinstance(c.name, str) and c.argc >= 0


@SETTINGS
@given(st.lists(st.sampled_from([b"*", b"$", b"\r\n", b"\r", b"\n", b"3", b"-1", b"0", b"GET", b"AUTH", b" ", b'"',
                                 b"\x00", b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"PING\r\n"]), max_size=60),
       st.lists(st.integers(0, 300), max_size=6), st.lists(st.integers(0, 20), max_size=6))
def test_protocol_shaped_garbage_never_raises(parts, cuts, gaps):
    data = b"".join(parts)
    p = RequestParser()
    chunks = [(c, len(c) + (gaps[i] if i < len(gaps) else 0)) for i, c in enumerate(split(data, cuts))]
    items, _ = feed_chunks(p, chunks)
    assert req_accounted(p, items) == sum(t for _, t in chunks)


secret_st = st.binary(min_size=4, max_size=8).map(lambda x: b"PW" + x.hex().encode())


@SETTINGS
@given(st.lists(st.one_of(cmd_st, secret_st), min_size=1, max_size=15),
       st.lists(st.integers(1, 3000), min_size=1, max_size=5), st.integers(0, 200), st.booleans(), st.booleans())
def test_truncated_captures(cmds, read_sizes, cap, show_values, inline):
    """Reads of any size captured up to `cap` bytes: never raises, every byte accounted for,
    complete commands are real ones, AUTH passwords never visible. (One client uses one
    encoding: inline or multibulk; MSET is left out of inline streams since "SET ..." inside
    "MSET ..." is indistinguishable from a line start.)"""
    frames, secrets = [], []
    for c in cmds:
        if isinstance(c, bytes):        # an AUTH with a recognisable password
            secrets.append(c)
            frames.append(b"AUTH " + c + b"\r\n" if inline else mb("AUTH", c))
        elif inline:
            if c[0] != b"MSET":
                frames.append(encode_cmd(c[0], [a.replace(b"*", b".") for a in c[1]], "q"))
        else:
            frames.append(mb(c[0], *[a.replace(b"*", b".") for a in c[1]]))
    stream = b"".join(frames)
    chunks = capture(stream, read_sizes, cap)
    p = RequestParser(show_values=show_values)
    items, spans = feed_chunks(p, chunks)
    assert req_accounted(p, items) == len(stream)
    truth = parse(stream)
    it = iter(truth)
    for c in items:                     # complete commands are real commands, in order
        if c.complete:
            assert any(c == t for t in it), c
    names = {t.name for t in truth}
    assert all(c.name in names or c.name == "?" for c in items)
    masked = [redact_spans(d, sp) for (d, _), sp in zip(chunks, spans)]
    for secret in secrets:              # never visible, whatever was lost
        assert all(secret not in m for m in masked)
        assert secret not in b"".join(m for m, (d, t) in zip(masked, chunks) if len(d) == t)


def arg_reads(name: bytes, args: list[bytes], cap: int) -> list[tuple[bytes, int]]:
    """Reads as Redis does them for big arguments: one per argument (header + payload), each
    captured up to its header plus `cap` payload bytes."""
    reads = []
    for i, a in enumerate([name] + args):
        hdr = (b"*%d\r\n" % (len(args) + 1) if i == 0 else b"") + b"$%d\r\n" % len(a)
        read = hdr + a + b"\r\n"
        reads.append((read[:len(hdr) + cap], len(read)))
    return reads


@SETTINGS
@given(st.lists(cmd_st, min_size=1, max_size=10), st.integers(0, 64))
def test_payload_only_truncation_returns_every_command(cmds, cap):
    """Headers captured, payloads cut anywhere: every command comes back, with exact sizes."""
    p = RequestParser()
    items = []
    for name, args, _ in cmds:
        got, _ = feed_chunks(p, arg_reads(name, args, cap))
        items += got
    truth = parse(b"".join(mb(c[0], *c[1]) for c in cmds))
    assert [(c.name, c.argc, c.size) for c in items] == [
        (t.name if len(c[0]) <= cap else "?", t.argc, t.size) for t, c in zip(truth, cmds)]
    assert [c.complete for c in items] == [all(len(a) + 2 <= cap for a in [c[0]] + c[1]) for c in cmds]
    assert p.desyncs == 0 and p.lost == 0


# -- replies ------------------------------------------------------------------------------------
def rparse(stream: bytes, **kw):
    return feed_chunks(ReplyParser(**kw), [stream])


@pytest.mark.parametrize("frame,expect", [
    (b"+OK\r\n", ("ok", None, None, None)),
    (b"+hello world\r\n", ("ok", None, None, None)),
    (b"-ERR unknown command 'foo'\r\n", ("error", "ERR", None, None)),
    (b"-WRONGTYPE Operation against a key\r\n", ("error", "WRONGTYPE", None, None)),
    (b"-NOSCRIPT No matching script\r\n", ("error", "NOSCRIPT", None, None)),
    (b"-MOVED 3999 127.0.0.1:6381\r\n", ("moved", "MOVED", "3999 127.0.0.1:6381", None)),
    (b"-ASK 3999 127.0.0.1:6381\r\n", ("ask", "ASK", "3999 127.0.0.1:6381", None)),
    (b"-ERR\r\n", ("error", "ERR", None, None)),
    (b":1000\r\n", ("ok", None, None, None)),
    (b"$5\r\nhello\r\n", ("ok", None, None, None)),
    (b"$0\r\n\r\n", ("ok", None, None, None)),
    (b"$-1\r\n", ("nil", None, None, None)),
    (b"*-1\r\n", ("nil", None, None, None)),
    (b"*0\r\n", ("ok", None, None, None)),
    (b"_\r\n", ("nil", None, None, None)),
    (b",3.14\r\n", ("ok", None, None, None)),
    (b"#t\r\n", ("ok", None, None, None)),
    (b"(3492890328409238509324850943850943825024385\r\n", ("ok", None, None, None)),
    (b"=15\r\ntxt:Some string\r\n", ("ok", None, None, None)),
    (b"!21\r\nSYNTAX invalid syntax\r\n", ("error", "SYNTAX", None, None)),
    (b"*2\r\n$3\r\nfoo\r\n:1\r\n", ("ok", None, None, None)),
    (b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n", ("ok", None, None, "message")),
    (b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", ("ok", None, None, "subscribe")),
    (b"*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$1\r\nx\r\n", ("ok", None, None, "pmessage")),
    (b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n", ("push", None, None, "message")),
    (b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n", ("push", None, None, "invalidate")),
    (b"*2\r\n+PONG\r\n$0\r\n\r\n", ("ok", None, None, "pong")),
    (b"*2\r\n+Pong!\r\n$0\r\n\r\n", ("ok", None, None, None)),
    (b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", ("ok", None, None, "pong")),
    (b"%2\r\n+first\r\n:1\r\n+second\r\n*2\r\n:2\r\n:3\r\n", ("ok", None, None, None)),
    (b"~2\r\n+a\r\n+b\r\n", ("ok", None, None, None)),
    (b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
     ("ok", None, None, None)),
    (b"|1\r\n+a\r\n+b\r\n-ERR x\r\n", ("error", "ERR", None, None)),
    (b"*2\r\n|1\r\n+a\r\n+b\r\n$7\r\nmessage\r\n:1\r\n", ("ok", None, None, "message")),
    (b"*3\r\n*1\r\n-ERR inner\r\n$-1\r\n*-1\r\n", ("ok", None, None, None)),
    (b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", ("ok", None, None, None)),
])
def test_reply_types(frame, expect):
    for show_values in (False, True):
        (items, _) = rparse(frame + b":7\r\n", show_values=show_values)
        assert len(items) == 2 and items[1] == Reply("ok", None, None, 4, None, True)
        r = items[0]
        assert (r.type, r.error, r.detail, r.head) == expect or (show_values and expect[3] is None)
        assert r.size == len(frame) and r.complete


def test_reply_head_with_show_values():
    (r,), _ = rparse(b"*2\r\n$3\r\nFoo\r\n:1\r\n", show_values=True)
    assert r.head == "foo"
    (r,), _ = rparse(b"*2\r\n$3\r\nFoo\r\n:1\r\n")
    assert r.head is None       # user data: masked, not shown
    (r,), _ = rparse(b"*2\r\n$40\r\n" + b"x" * 40 + b"\r\n:1\r\n", show_values=True)
    assert r.head is None       # not short


def test_reply_masking():
    s = (b"+OK\r\n+QUEUED\r\n+PONG\r\n+string\r\n+secret status\r\n$5\r\nhello\r\n-ERR bad 'x'\r\n"
         b"=15\r\ntxt:Some string\r\n!11\r\nERR blob xx\r\n*2\r\n$7\r\nmessage\r\n$3\r\nabc\r\n:42\r\n,1.5\r\n")
    items, spans = rparse(s)
    assert redact_spans(s, spans[0]) == (
        b"+OK\r\n+QUEUED\r\n+PONG\r\n+string\r\n+*************\r\n$5\r\n*****\r\n-ERR bad 'x'\r\n"
        b"=15\r\ntxt:***********\r\n!11\r\nERR blob xx\r\n*2\r\n$7\r\nmessage\r\n$3\r\n***\r\n:42\r\n,1.5\r\n")
    assert rparse(s, show_values=True)[1] == [[]]


def assert_masks_match(split_masked: bytes, whole_masked: bytes):
    """A simple string (or pub/sub head) split across writes may leave unmasked the first bytes
    when they could still become a protocol word (OK, QUEUED, message...); nothing else differs."""
    assert len(split_masked) == len(whole_masked)
    diff = [i for i, (x, y) in enumerate(zip(split_masked, whole_masked)) if x != y]
    assert all(whole_masked[i] == 42 for i in diff)
    assert len(diff) <= 24 * (split_masked.count(b"\r\n") + 1)
    for i in diff:   # each differing byte belongs to a run that is a prefix of a protocol word
        start = i
        while start > 0 and whole_masked[start - 1] == 42 and split_masked[start - 1] != 42:
            start -= 1
        assert split_masked[start - 1] in b"+\n", split_masked[start - 8:i + 8]


REPLY_STREAM = (b"+OK\r\n$5\r\nhello\r\n*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nabc\r\n-MOVED 1 h:1\r\n"
                b"|1\r\n+a\r\n+b\r\n%1\r\n+k\r\n*2\r\n:1\r\n_\r\n>2\r\n$4\r\npong\r\n$0\r\n\r\n=6\r\ntxt:ab\r\n"
                b"!5\r\nERR x\r\n+status text\r\n$-1\r\n")


@pytest.mark.parametrize("show_values", [False, True])
def test_reply_every_split_point(show_values):
    whole, spans = rparse(REPLY_STREAM, show_values=show_values)
    assert len(whole) == 10 and sum(r.size for r in whole) == len(REPLY_STREAM)
    for i in range(len(REPLY_STREAM) + 1):
        for j in (i, i + 1, i + 5):
            chunks = split(REPLY_STREAM, [i, j])
            p = ReplyParser(show_values=show_values)
            items, sp = feed_chunks(p, chunks)
            assert items == whole, (i, j)
            assert_masks_match(b"".join(masked_chunks(chunks, sp)), redact_spans(REPLY_STREAM, spans[0]))
            assert not p.pending and not p.desynced
            assert feed_chunks(ReplyParser(show_values=show_values), masked_chunks(chunks, sp))[0] == whole


def test_reply_big_bulk_skipped_exactly():
    value = b"v" * 1_000_000
    s = b"$%d\r\n" % len(value) + value + b"\r\n" + b"+OK\r\n"
    p = ReplyParser()
    items, spans = feed_chunks(p, capture(s[:-5], [65536], 4096) + [s[-5:]])
    assert items == [Reply("ok", None, None, len(s) - 5, None, False), Reply("ok", None, None, 5, None, True)]
    assert not p.desynced


def test_reply_array_elements_not_captured_desyncs_until_resync():
    s = b"*1000\r\n" + b"".join(b"$6\r\nvalue%d\r\n" % (i % 10) for i in range(1000))
    p = ReplyParser()
    chunks = capture(s, [5000], 1000)
    items, spans = feed_chunks(p, chunks)
    assert items == [] and p.desynced and p.pending
    for (data, _), sp in zip(chunks[1:], spans[1:]):
        assert sp == [(0, len(data))]          # lost bytes are masked whole
    r = p.resync()
    assert r == Reply("ok", None, None, len(s), None, False)
    assert p.resync() is None and not p.pending
    assert feed_chunks(p, [b"+OK\r\n"])[0] == [Reply("ok", None, None, 5, None, True)]


def test_reply_gap_at_boundary_and_garbage():
    p = ReplyParser()
    items, _ = feed_chunks(p, [(b"+OK\r\n", 500)])
    assert items == [Reply("ok", None, None, 5, None, True)] and p.desynced
    assert p.resync() == Reply("unknown", None, None, 495, None, False)
    items, _ = feed_chunks(p, [b"garbage"])
    assert items == [] and p.desynced
    assert p.resync() == Reply("unknown", None, None, 7, None, False)
    items, _ = feed_chunks(p, [(b"-ERR some", 100)])
    assert p.resync() == Reply("error", "ERR", None, 100, None, False)
    items, _ = feed_chunks(p, [(b"-MOVED 12 10.0.0.1:7000\r", 100)])     # only the \n was not captured
    assert items == [Reply("moved", "MOVED", "12 10.0.0.1:7000", 25, None, False)]
    assert p.resync() == Reply("unknown", None, None, 75, None, False)
    items, _ = feed_chunks(p, [(b"-MOVED 12 10.0", 100)])
    assert items == [] and p.resync() == Reply("moved", "MOVED", "12 10.0", 100, None, False)


def test_reply_error_prefix_in_blob_and_never_masked():
    (r,), spans = rparse(b"!28\r\nNOPERM this user has no perm\r\n")
    assert (r.type, r.error) == ("error", "NOPERM") and spans == [[]]


reply_scalar = st.one_of(
    st.binary(max_size=40).map(lambda x: b"$%d\r\n%s\r\n" % (len(x), x)),
    st.text("abcXYZ OK", max_size=12).map(lambda t: b"+" + t.encode() + b"\r\n"),
    st.sampled_from([b"+OK\r\n", b"+QUEUED\r\n", b"$-1\r\n", b"*-1\r\n", b"_\r\n", b"#t\r\n", b",1.5\r\n",
                     b"(12345678901234567890\r\n", b"-ERR x y\r\n", b"-MOVED 1 a:1\r\n", b"!5\r\nERR z\r\n",
                     b"=8\r\ntxt:abcd\r\n", b"$7\r\nmessage\r\n"]),
    st.integers(-10**6, 10**6).map(lambda i: b":%d\r\n" % i),
    st.binary(min_size=200, max_size=5000).map(lambda x: b"$%d\r\n%s\r\n" % (len(x), x)),
)


def _agg(children):
    return st.one_of(
        st.lists(children, max_size=4).map(lambda xs: b"*%d\r\n" % len(xs) + b"".join(xs)),
        st.lists(st.tuples(children, children), max_size=3).map(
            lambda xs: b"%%%d\r\n" % len(xs) + b"".join(k + v for k, v in xs)),
        st.lists(children, max_size=3).map(lambda xs: b"~%d\r\n" % len(xs) + b"".join(xs)),
        st.tuples(st.lists(st.tuples(reply_scalar, reply_scalar), min_size=1, max_size=2), children).map(
            lambda t: b"|%d\r\n" % len(t[0]) + b"".join(k + v for k, v in t[0]) + t[1]),
    )


reply_value = st.recursive(reply_scalar, _agg, max_leaves=12)
reply_top = st.one_of(reply_value,
                      st.lists(reply_value, max_size=3).map(lambda xs: b">%d\r\n" % len(xs) + b"".join(xs)))


@SETTINGS
@given(st.lists(reply_top, min_size=1, max_size=8), st.lists(st.integers(0, 20000), max_size=8), st.booleans())
def test_valid_reply_streams_parse_independently_of_splits(frames, cuts, show_values):
    stream = b"".join(frames)
    whole, spans = rparse(stream, show_values=show_values)
    assert [r.size for r in whole] == [len(f) for f in frames]
    assert all(r.complete and r.type != "unknown" for r in whole)
    chunks = split(stream, cuts)
    p = ReplyParser(show_values=show_values)
    items, sp = feed_chunks(p, chunks)
    assert items == whole and not p.pending and not p.desynced
    masked = masked_chunks(chunks, sp)
    assert_masks_match(b"".join(masked), redact_spans(stream, spans[0]))
    assert feed_chunks(ReplyParser(show_values=show_values), masked)[0] == whole


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6), st.lists(st.integers(0, 50), max_size=6),
       st.lists(st.booleans(), max_size=6))
def test_random_reply_bytes_never_raise(data, cuts, gaps, resyncs):
    p = ReplyParser()
    chunks = [(c, len(c) + (gaps[i] if i < len(gaps) else 0)) for i, c in enumerate(split(data, cuts))]
    total = 0
    for i, c in enumerate(chunks):
        got, _ = feed_chunks(p, [c])
        total += sum(r.size for r in got)
        if i < len(resyncs) and resyncs[i]:
            r = p.resync()
            total += r.size if r else 0
    if p.desynced:
        total += p.resync().size
    assert total + (p._fsize if p.pending else 0) == sum(t for _, t in chunks)


@SETTINGS
@given(st.lists(reply_top, min_size=1, max_size=8), st.lists(st.integers(1, 3000), min_size=1, max_size=4),
       st.integers(0, 100))
def test_truncated_reply_captures(frames, write_sizes, cap):
    stream = b"".join(frames)
    p = ReplyParser()
    items, _ = feed_chunks(p, capture(stream, write_sizes, cap))
    lost = p.resync()
    assert sum(r.size for r in items) + (lost.size if lost else 0) + (p._fsize if p.pending else 0) == len(stream)
    truth = rparse(stream)[0]
    it = iter(truth)
    for r in items:
        if r.complete:
            assert any(r == t for t in it), r


# -- against a real redis-server ---------------------------------------------------------------
def _roundtrip(sock, payload: bytes, n_replies: int, parser: ReplyParser):
    sock.sendall(payload)
    replies, received = [], 0
    deadline = time.time() + 5
    while len(replies) < n_replies and time.time() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        received += len(data)
        got, _ = parser.feed(data, len(data))
        replies += got
    assert sum(r.size for r in replies) == received
    return replies


REAL_CMDS = [
    (("PING",), "ok"), (("SET", "k", "v"), "ok"), (("GET", "k"), "ok"), (("GET", "nokey"), "nil"),
    (("INCR", "n"), "ok"), (("LPUSH", "l", "a", "b"), "ok"), (("LRANGE", "l", "0", "-1"), "ok"),
    (("HSET", "h", "f", "1"), "ok"), (("HGETALL", "h"), "ok"), (("GET", "l"), "error"), (("FOO",), "error"),
    (("ZADD", "z", "1.5", "m"), "ok"), (("ZSCORE", "z", "m"), "ok"), (("SMEMBERS", "nokey"), "ok"),
    (("CLIENT", "INFO"), "ok"), (("INFO", "server"), "ok"), (("MULTI",), "ok"), (("INCR", "n"), "ok"),
    (("GET", "l"), "ok"), (("EXEC",), "ok"), (("XADD", "s", "*", "f", "v"), "ok"),
    (("XREAD", "STREAMS", "s", "0"), "ok"),
    (("CONFIG", "GET", "maxmemory*"), "ok"), (("EVAL", "return redis.error_reply('NOSCRIPT x')", "0"), "error"),
    (("BLPOP", "nolist", "0.01"), "nil"),
] + [(("DEBUG", "PROTOCOL", t), "nil" if t == "null" else "ok")
     for t in ("string", "integer", "double", "bignum", "null", "array", "set", "map", "attrib", "verbatim", "true")]


def test_real_server_replies_resp2_and_resp3(redis_factory):
    server = redis_factory(enable_debug_command="yes")
    for proto in (2, 3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            parser = ReplyParser()
            assert [r.type for r in _roundtrip(sock, mb("HELLO", str(proto)), 1, parser)] == ["ok"]
            req = b"".join(mb(*c) for c, _ in REAL_CMDS)
            assert [c.name for c in parse(req)] == [c[0] for c, _ in REAL_CMDS]
            got = _roundtrip(sock, req, len(REAL_CMDS), parser)
            assert [r.type for r in got] == [t for _, t in REAL_CMDS], (proto, got)
            assert [r.error for r in got if r.error] == ["WRONGTYPE", "ERR", "NOSCRIPT"]
            assert not parser.pending and not parser.desynced
            if proto == 3:      # a push between replies is its own frame
                got = _roundtrip(sock, mb("DEBUG", "PROTOCOL", "push"), 2, parser)
                assert [r.type for r in got] == ["push", "ok"]
            got = _roundtrip(sock, mb("SUBSCRIBE", "ch"), 1, parser)
            assert got[0].head == "subscribe" and got[0].type == ("ok" if proto == 2 else "push")
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as pub:
                assert _roundtrip(pub, mb("PUBLISH", "ch", "hello"), 1, ReplyParser())[0].type == "ok"
            deadline, got = time.time() + 5, []
            while not got and time.time() < deadline:
                data = sock.recv(65536)
                got, spans = parser.feed(data, len(data))
            assert got[0].head == "message" and b"hello" not in redact_spans(data, spans)
