"""Stitcher throughput and memory on a synthetic 1M-request trace (no root needed).

    .venv/bin/python benchmarks/stitcher_throughput.py [--requests N] [--keep FILE] [--json] [--quick]

1. builds a trace file with tracer.tracefile.recording.TraceWriter, records laid out as the syscall probes
   emit them for redis-benchmark-like traffic: 50 connections accepted at the start, then event
   loop iterations that each read 1-12 ready clients and write their replies (GET 50 %, SET 35 %,
   INCR/HGET/MGET/DEL the rest, 2 % pipelined batches of 2-16 commands, keys `key:NNNNNNNNN` drawn
   from 1M), arrival/wake timestamps on every READ, a LOOP record now and then;
2. "record" phase: the same records fed through the recording pipeline (stitcher + analyzer +
   redaction + TraceWriter), as `redis-tracer record` does after draining the ring buffer;
3. "report" phase: `redis-tracer report --json` done in-process (tracer.runtime.offline.analyse + report),
   timed on one core (the process is pinned to one CPU), requests/s = requests / wall seconds; run
   through both hot paths on the same file, interleaved (--rounds): the compiled one (when built) and
   the pure-Python reference (REDIS_TRACER_PURE_PYTHON=1), whose JSON reports must be identical.

Each phase runs in a fresh interpreter so its peak RSS (VmHWM) is its own. Prints a table, or one
JSON object with --json. --quick: 20k requests, for the CI smoke test.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)

from tracer.kernel import events  # noqa: E402

PID = 4242
CLIENTS = 50
BATCH = 4096            # records per write_many / feed call, as a drain hands them over


def _bulk(s: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(s), s)


def _cmd(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(_bulk(p) for p in parts)


def synthetic_records(requests: int, seed: int = 1):
    """Yield raw records (bytes) for `requests` commands, lazily (bounded memory)."""
    rng = random.Random(seed)
    rand = rng.random
    pack = events.HEADER.pack
    READ, WRITE, ACCEPT, LOOP = events.READ, events.WRITE, events.ACCEPT, events.LOOP
    ts = 1_000_000_000_000
    clients = []
    for i in range(CLIENTS):
        fam, addr = events.peer_bytes("127.0.0.1")
        clients.append((10 + i, fam, addr, 40000 + i))
    for fd, fam, addr, port in clients:
        yield pack(ts, ts + 4000, ts - 20_000, 0, fd, PID, PID, fd, ACCEPT, events.RTF_ACCEPT4, 0, port, fam, addr)
        ts += 5000
    value3 = b"xxx"
    values = [b"x" * n for n in (3, 3, 3, 10, 32, 64, 100, 400)]

    def one():
        r = rand()
        k = b"key:%09d" % rng.randrange(1_000_000)
        if r < 0.50:
            return _cmd(b"GET", k), (_bulk(value3) if rand() < 0.9 else b"$-1\r\n")
        if r < 0.85:
            return _cmd(b"SET", k, rng.choice(values)), b"+OK\r\n"
        if r < 0.92:
            return _cmd(b"INCR", b"counter:%d" % rng.randrange(100)), b":%d\r\n" % rng.randrange(10**7)
        if r < 0.96:
            return _cmd(b"HGET", b"user:%d" % rng.randrange(10**5), b"plan"), _bulk(b"premium")
        if r < 0.98:
            ks = [b"key:%09d" % rng.randrange(1_000_000) for _ in range(rng.randrange(2, 8))]
            return _cmd(b"MGET", *ks), b"*%d\r\n" % len(ks) + b"".join(_bulk(value3) for _ in ks)
        return _cmd(b"DEL", k), b":1\r\n"

    done = 0
    while done < requests:
        ready = rng.sample(clients, min(CLIENTS, rng.randrange(1, 13)))
        wake = ts
        ts += 2000
        replies = []
        for fd, fam, addr, port in ready:
            if done >= requests:
                break
            n = 1 if rand() < 0.98 else rng.randrange(2, 17)
            n = min(n, requests - done)
            done += n
            reqs, reps = zip(*(one() for _ in range(n)))
            data = b"".join(reqs)
            t0 = ts
            ts += 1500 + rng.randrange(1500)
            yield pack(t0, ts, wake - rng.randrange(1000, 30_000), wake, len(data), PID, PID, fd, READ, 0,
                       len(data), 0, 0, b"\0" * 16) + data
            ts += 800 + rng.randrange(3000)      # execution: up to the main thread's next syscall
            replies.append((fd, b"".join(reps)))
        for fd, rep in replies:
            t0 = ts
            ts += 2000 + rng.randrange(3000)
            yield pack(t0, ts, 0, 0, len(rep), PID, PID, fd, WRITE, 0, len(rep), 0, 0, b"\0" * 16) + rep
        if rand() < 0.002:                       # a busy span >= 1 ms now and then
            yield pack(ts, ts, wake, 0, 1, PID, PID, -1, LOOP, events.RTF_EPOLL_PWAIT, 0, 0, 0, b"\0" * 16)
        ts += 1000 + rng.randrange(20_000)


def header() -> dict:
    return {"targets": [{"pid": PID, "port": 6379, "redis_version": "7.0.0", "listen_ports": [6379]}],
            "probes": ["conn", "io", "loop", "fsync"], "exec_probes": False, "capture_max": 4096,
            "show_values": False, "stall_ms": 50}


def _hwm_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pin_one_core() -> int | None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
        return cpus[-1]
    except (AttributeError, OSError):
        return None


def _batches(it, n=BATCH):
    chunk = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- phases (each in its own interpreter) ---------------------------------------------------------
def phase_build(path: str, requests: int) -> dict:
    from tracer.tracefile.recording import TraceWriter

    base = _hwm_mb()
    t0 = time.perf_counter()
    with TraceWriter(path, header(), overwrite=True, compress_budget=None) as w:
        for chunk in _batches(synthetic_records(requests)):
            w.write_many(chunk)
        w.write_trailer({"requests": requests})
        records = w.records_written
    return {"seconds": time.perf_counter() - t0, "records": records, "bytes": os.path.getsize(path),
            "rss_base_mb": base, "rss_peak_mb": _hwm_mb()}


def phase_record(path: str, requests: int) -> dict:
    """The record command's user-space path: pipeline with a TraceWriter (redaction on)."""
    from tracer.runtime.pipeline import Pipeline
    from tracer.tracefile.recording import TraceWriter

    cpu = _pin_one_core()
    base = _hwm_mb()
    t0 = time.perf_counter()
    c0 = time.process_time()
    writer = TraceWriter(path, header(), overwrite=True)
    pipeline = Pipeline(stall_ms=50, writer=writer, targets=header()["targets"])
    records = 0
    for chunk in _batches(synthetic_records(requests)):
        records += len(chunk)
        pipeline.feed(chunk)
    gen_and_feed = time.perf_counter() - t0
    gen_and_feed_cpu = time.process_time() - c0
    pipeline.finish()
    writer.write_trailer({"requests": pipeline.stitcher.stats.requests})
    writer.close()
    return {"seconds": time.perf_counter() - t0, "feed_seconds": gen_and_feed, "feed_cpu_seconds": gen_and_feed_cpu,
            "records": records,
            "requests": pipeline.stitcher.stats.requests, "cpu": cpu,
            "rss_base_mb": base, "rss_peak_mb": _hwm_mb()}


def phase_generate(requests: int) -> dict:
    """Cost of producing the synthetic records alone (subtracted from the record phase)."""
    _pin_one_core()
    t0 = time.perf_counter()
    c0 = time.process_time()
    n = 0
    for chunk in _batches(synthetic_records(requests)):
        n += len(chunk)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "records": n}


def phase_report(path: str) -> dict:
    from tracer.runtime import offline

    cpu = _pin_one_core()
    base = _hwm_mb()
    t0 = time.perf_counter()
    c0 = time.process_time()
    hdr, pipeline = offline.analyse(path)
    report = pipeline.report(hdr.first_target).to_json()
    text = json.dumps(report, sort_keys=True)
    seconds = time.perf_counter() - t0
    from tracer import native

    return {"compiled": native.status()[0], "report_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "seconds": seconds, "cpu_seconds": time.process_time() - c0, "requests": report["requests"], "records": pipeline.stitcher.stats.events,
            "cpu": cpu, "rss_base_mb": base, "rss_peak_mb": _hwm_mb(),
            "unanswered": report.get("unanswered"), "commands": len(report.get("commands") or {})}


PURE_ENV = "REDIS_TRACER_PURE_PYTHON"   # tracer.native.PURE_ENV


def _run_phase(args: list[str], timeout: float, pure: bool | None = None) -> dict:
    env = dict(os.environ)
    if pure is not None:
        env.pop(PURE_ENV, None)
        if pure:
            env[PURE_ENV] = "1"
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--phase", *args], capture_output=True,
                         text=True, timeout=timeout, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"phase {args[0]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="20k requests (CI smoke)")
    ap.add_argument("--keep", metavar="FILE", help="write the trace here and keep it")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--rounds", type=int, default=1, help="report runs per hot path, interleaved (default 1)")
    ap.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.phase:
        name, rest = args.phase[0], args.phase[1:]
        if name == "build":
            result = phase_build(rest[0], int(rest[1]))
        elif name == "record":
            result = phase_record(rest[0], int(rest[1]))
        elif name == "generate":
            result = phase_generate(int(rest[0]))
        else:
            result = phase_report(rest[0])
        print(json.dumps(result))
        return 0

    n = 20_000 if args.quick else args.requests
    timeout = 3600
    with tempfile.TemporaryDirectory(prefix="rt-stitch-") as tmp:
        path = args.keep or os.path.join(tmp, "synthetic.rtrace")
        build = _run_phase(["build", path, str(n)], timeout)
        gen = _run_phase(["generate", str(n)], timeout)
        rec = _run_phase(["record", os.path.join(tmp, "recorded.rtrace"), str(n)], timeout)
        runs = {True: [], False: []}     # pure? -> report phases
        for r in range(max(1, args.rounds)):
            for pure in ((False, True) if r % 2 == 0 else (True, False)):
                runs[pure].append(_run_phase(["report", path], timeout, pure=pure))
    compiled_runs, pure_runs = runs[False], runs[True]
    if len({run["report_sha256"] for run in compiled_runs + pure_runs}) != 1:
        raise SystemExit("the compiled and the pure-Python path gave different reports")
    rep = min(compiled_runs, key=lambda run: run["cpu_seconds"])
    pure_rep = min(pure_runs, key=lambda run: run["cpu_seconds"])

    def per_cpu_s(run):
        return round(run["requests"] / max(1e-9, run["cpu_seconds"]))
    rec_pipeline_s = max(1e-9, rec["feed_seconds"] - gen["seconds"])
    rec_pipeline_cpu = max(1e-9, rec["feed_cpu_seconds"] - gen["cpu_seconds"])
    result = {
        "requests": rep["requests"],
        "records": build["records"],
        "trace_mb": round(build["bytes"] / 1e6, 1),
        "report_seconds": round(rep["seconds"], 3),
        "report_requests_per_s": round(rep["requests"] / rep["seconds"]),
        "report_us_per_request": round(rep["seconds"] / max(1, rep["requests"]) * 1e6, 2),
        "report_cpu_seconds": round(rep["cpu_seconds"], 3),
        "report_requests_per_cpu_s": per_cpu_s(rep),
        "report_compiled": rep["compiled"],
        "report_requests_per_cpu_s_range": [min(map(per_cpu_s, compiled_runs)), max(map(per_cpu_s, compiled_runs))],
        "report_pure_requests_per_cpu_s": per_cpu_s(pure_rep),
        "report_pure_requests_per_cpu_s_range": [min(map(per_cpu_s, pure_runs)), max(map(per_cpu_s, pure_runs))],
        "report_speedup": round(per_cpu_s(rep) / max(1, per_cpu_s(pure_rep)), 2),
        "report_rss_peak_mb": round(rep["rss_peak_mb"], 1),
        "report_rss_base_mb": round(rep["rss_base_mb"], 1),
        "record_requests_per_s": round(rec["requests"] / rec_pipeline_s),
        "record_requests_per_cpu_s": round(rec["requests"] / rec_pipeline_cpu),
        "record_rss_peak_mb": round(rec["rss_peak_mb"], 1),
        "build_rss_peak_mb": round(build["rss_peak_mb"], 1),
        "unanswered": rep["unanswered"],
        "cpu_pinned": rep["cpu"],
    }
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"synthetic trace: {result['requests']:,} requests, {result['records']:,} records, "
          f"{result['trace_mb']} MB")
    print(f"report (one core):   {result['report_requests_per_s']:>10,} requests/s wall, "
          f"{result['report_requests_per_cpu_s']:,} per CPU-second  "
          f"({result['report_us_per_request']} us/request, {result['report_seconds']} s)  "
          f"peak RSS {result['report_rss_peak_mb']} MB")
    print(f"report, pure Python: {result['report_pure_requests_per_cpu_s']:>10,} per CPU-second "
          f"(range {result['report_pure_requests_per_cpu_s_range']}); "
          f"{'compiled' if result['report_compiled'] else 'NOT compiled (not built)'} path above: "
          f"range {result['report_requests_per_cpu_s_range']}, x{result['report_speedup']}, identical reports")
    print(f"record pipeline:     {result['record_requests_per_s']:>10,} requests/s wall, "
          f"{result['record_requests_per_cpu_s']:,} per CPU-second "
          f"(stitch+analyse+redact+write)  peak RSS {result['record_rss_peak_mb']} MB")
    print(f"trace writing alone: peak RSS {result['build_rss_peak_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
