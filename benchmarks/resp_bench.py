"""Micro-benchmark of the RESP decoders: commands/s for reads of 16 pipelined GET/SET commands,
and replies/s for the matching writes. Run: python benchmarks/resp_bench.py [seconds]"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tracer.decode.resp import ReplyParser, RequestParser  # noqa: E402


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def make_reads(nreads: int = 256) -> list[bytes]:
    reads = []
    for r in range(nreads):
        cmds = []
        for i in range(16):
            key = b"key:%06d" % (r * 16 + i)
            cmds.append(resp(b"SET", key, b"v" * 32) if i % 2 else resp(b"GET", key))
        reads.append(b"".join(cmds))
    return reads


def make_writes(nwrites: int = 256) -> list[bytes]:
    return [b"".join(b"+OK\r\n" if i % 2 else b"$32\r\n" + b"v" * 32 + b"\r\n" for i in range(16))
            for _ in range(nwrites)]


def bench(parser_factory, chunks, seconds: float) -> float:
    items = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        p = parser_factory()
        for c in chunks:
            got, _ = p.feed(c, len(c))
            items += len(got)
    return items / (time.perf_counter() - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    reads, writes = make_reads(), make_writes()
    print(f"requests (16-command pipelined GET/SET reads): {bench(RequestParser, reads, seconds):,.0f} commands/s")
    print(f"replies  (16-reply writes, +OK / $32 bulk):     {bench(ReplyParser, writes, seconds):,.0f} replies/s")


if __name__ == "__main__":
    main()
