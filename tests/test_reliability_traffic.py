"""Malformed and hostile client traffic against a real redis-server traced by `trace --json`: the
tracer keeps going, marks what it could not decode, stays bounded, and still traces a normal client
exactly afterwards."""
from __future__ import annotations

import os
import random
import socket
import time

import pytest

from reliability_util import HOST, call, cli, connect, read_some
from tracer_proc import TracerProcess, json_lines, report_of

pytestmark = pytest.mark.bpf

STORM = 2000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def send_and_close(port: int, data: bytes, wait_reply: bool = True) -> bytes:
    s = connect(port)
    s.sendall(data)
    reply = read_some(s, quiet_s=0.1, limit_s=2) if wait_reply else b""
    s.close()
    return reply


def test_hostile_traffic_then_a_normal_client_is_traced_exactly(redis_server):
    port = redis_server.port
    tracer = TracerProcess("trace", "--port", str(port), "--json")
    time.sleep(0.3)
    rss_start = rss_kib(tracer.proc.pid)

    # garbage, protocol errors: Redis answers -ERR and closes
    send_and_close(port, b"\x00\xff\xfe\x01garbage \x80\x81 bytes\r\n")   # Redis: a C string, empty
    assert b"-ERR unknown command" in send_and_close(port, b"\xff\xfe\x01garbage \x80\x81 bytes\r\n")
    assert b"-ERR Protocol error" in send_and_close(port, b"*abc\r\n$3\r\nGET\r\n")
    assert b"-ERR Protocol error" in send_and_close(port, b"*2\r\n:1\r\n")
    # half a frame, then the client goes away
    send_and_close(port, b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$10\r\nabc", wait_reply=False)
    # a 1 GB declared bulk (over proto-max-bulk-len): refused by Redis; a 400 MB one that never comes
    assert b"-ERR Protocol error" in send_and_close(port, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1073741824\r\n" +
                                                    b"x" * 5000)
    send_and_close(port, b"*3\r\n$3\r\nSET\r\n$5\r\nhuge1\r\n$400000000\r\n" + b"y" * 100_000, wait_reply=False)
    # binary keys, non-UTF-8 bytes, NUL, CR/LF inside keys
    s = connect(port)
    binary_keys = [b"\x00\xff\x01bin\r\nkey", b"\xc3\x28\xa0\xa1-not-utf8", "ключ-utf8".encode(), b"\x1b[31mansi"]
    for k in binary_keys:
        assert call(s, "SET", k, b"\xff\xfe\x00value") == b"+OK\r\n"
    s.close()
    # an inline command with unbalanced quotes (Redis: protocol error)
    assert b"-ERR" in send_and_close(port, b'SET "unbalanced value\r\n')
    rss_before_storm = rss_kib(tracer.proc.pid)
    # 2000 connections opening and closing quickly; every tenth sends a PING first
    for i in range(STORM):
        c = socket.create_connection((HOST, port), timeout=5)
        if i % 10 == 0:
            c.sendall(b"PING\r\n")
            c.recv(16)
        c.close()
    # finally a normal client: every command traced with the right key and reply
    s = connect(port)
    for i in range(50):
        assert call(s, "SET", f"after:{i}", "v") == b"+OK\r\n"
        assert call(s, "GET", f"after:{i}") == b"$1\r\nv\r\n"
    assert call(s, "GET", "after:missing") == b"$-1\r\n"
    s.close()
    assert redis_server.proc.poll() is None
    time.sleep(0.5)
    rss_end = rss_kib(tracer.proc.pid)
    rc, out = tracer.stop()
    err = tracer.stderr_text()
    assert rc == 0 and "Traceback" not in err, err
    recs = json_lines(out)

    after = [r for r in recs if (r["key"] or "").startswith("after:")]
    assert sorted((r["command"], r["key"]) for r in after if r["command"] == "SET") == \
        sorted(("SET", f"after:{i}") for i in range(50))
    gets = [r for r in after if r["command"] == "GET"]
    assert len(gets) == 51 and all(r["reply_bytes"] in (7, 5) and r["latency_us"] for r in gets)
    assert [r["reply_type"] for r in gets if r["key"] == "after:missing"] == ["nil"]
    # binary keys are shown escaped, one line each, never raw control bytes
    bin_sets = [r for r in recs if r["command"] == "SET" and r["key"] and "after:" not in r["key"]
                and r["reply_type"] == "ok"]
    shown = {r["key"] for r in bin_sets}
    assert "\\x00\\xff\\x01bin\\x0d\\x0akey" in shown and "ключ-utf8" in shown and "\\x1b[31mansi" in shown
    assert any(k.startswith("\\xc3(\\xa0\\xa1") for k in shown), shown
    assert all("\x1b" not in line and "\x00" not in line for line in out.splitlines())
    # what could not be decoded is marked: "?" requests, counted in the summary line
    assert any(r["command"] == "?" for r in recs)
    summary = [line for line in err.splitlines() if line.startswith("traced:")][-1]
    undecodable = int(summary.split(" undecodable")[0].rsplit(" ", 1)[1])
    assert undecodable >= 3, summary
    pings = [r for r in recs if r["command"] == "PING"]
    assert len(pings) == STORM // 10
    # memory: the storm and the garbage left no per-connection state behind
    assert rss_end - rss_before_storm < 20 * 1024, (rss_start, rss_before_storm, rss_end)


def test_garbage_lines_share_one_row_in_the_report(redis_server, tmp_path):
    port = redis_server.port
    path = tmp_path / "garbage.rtrace"
    tracer = TracerProcess("record", "--port", str(port), "-o", str(path))
    rng = random.Random(7)
    plain = bytes(b for b in range(0x21, 0x7f) if b not in b"*$\"'")
    for i in range(30):       # a fresh garbage word each: Redis answers "-ERR unknown command"
        line = bytes(rng.choice(plain) for _ in range(12)) + b" " + os.urandom(8).hex().encode() + b"\r\n"
        assert send_and_close(port, line).startswith(b"-ERR unknown command")
    assert send_and_close(port, b"GTE typo:key\r\n").startswith(b"-ERR unknown command")
    assert b"-ERR Protocol error" in send_and_close(port, b"*abc\r\n$3\r\nGET\r\n")
    s = connect(port)
    for i in range(10):
        assert call(s, "SET", f"real:{i}", "v") == b"+OK\r\n"
    s.close()
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    report = report_of(path)
    assert set(report["commands"]) == {"?", "SET"}, sorted(report["commands"])
    row = report["commands"]["?"]
    assert row["count"] >= 32 and report["commands"]["SET"]["count"] == 10
    assert 1 <= len(row["samples"]) <= 5 and len(set(row["samples"])) == len(row["samples"])
    assert {k for k, _ in report["hot_keys"]} == {f"real:{i}" for i in range(10)}   # no garbage "keys"
    text = cli("report", str(path))
    assert text.returncode == 0 and b"unknown commands Redis refused, e.g. " in text.stdout
