"""report/export on bad trace files: one clear line and a non-zero exit, or a partial result + warning."""
from __future__ import annotations

import json
import subprocess
import sys

from eventstream import Stream, bulk, cmd
from tracer_proc import REPO

from tracer.recording import TraceWriter


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tracer", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def write_trace(path, n_requests=3000, block_size=4096):
    s = Stream()
    s.accept(7, 40000)
    for i in range(n_requests):
        s.read(7, cmd("GET", f"k{i}"))
        s.write(7, bulk(b"v"))
    header = {"targets": [{"pid": s.pid, "port": 6379, "redis_version": "7.0.15"}], "stall_ms": 50}
    with TraceWriter(path, header, block_size=block_size) as w:
        w.write_many(s.raw())
    return n_requests


def test_report_of_synthetic_trace(tmp_path):
    path = tmp_path / "ok.rtrace"
    n = write_trace(path)
    proc = cli("report", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["requests"] == n and report["commands"]["GET"]["count"] == n
    assert proc.stdout.count("\n") == 1  # exactly one JSON object


def test_truncated_trace_gives_partial_result_and_warning(tmp_path):
    path = tmp_path / "cut.rtrace"
    n = write_trace(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    proc = cli("report", str(path), "--json")
    assert proc.returncode == 0
    report = json.loads(proc.stdout)
    assert 0 < report["commands"]["GET"]["count"] < n
    assert "warning" in proc.stderr and "Traceback" not in proc.stderr


def test_one_flipped_byte_in_a_large_trace_costs_one_block(tmp_path):
    path = tmp_path / "big.rtrace"
    n = write_trace(path, 60_000, block_size=64 * 1024)   # 12 MB of records in ~180 blocks
    data = bytearray(path.read_bytes())
    assert len(data) > 2**20               # compressed or not, depending on the writer's CPU budget
    data[len(data) // 2] ^= 0x04                       # one bit, mid-file
    path.write_bytes(bytes(data))
    proc = cli("report", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    gets = json.loads(proc.stdout)["commands"]["GET"]["count"]
    per_block = 64 * 1024 // 200                        # a GET and its reply frame to > 200 bytes
    assert n - 2 * per_block <= gets < n     # one block's requests lost (and edges split with its neighbours)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("redis-tracer: warning: ")]
    assert len(warnings) == 2 and "is corrupt (" in warnings[0] and "reading on from the next valid block" \
        in warnings[0] and "lost in the damaged blocks" in warnings[1], proc.stderr


def test_bad_files_fail_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01 this is not a trace" * 50)
    wrong = tmp_path / "wrong-version"
    good = tmp_path / "good"
    write_trace(good, 10)
    raw = bytearray(good.read_bytes())
    raw[7] = 9  # format generation byte
    wrong.write_bytes(bytes(raw))
    missing = tmp_path / "missing"
    for path in (empty, garbage, wrong, missing):
        for command in (["report", str(path)], ["report", str(path), "--json"],
                        ["export", str(path), "-o", str(tmp_path / "x.json")]):
            proc = cli(*command)
            assert proc.returncode != 0, (command, proc.stdout)
            assert "Traceback" not in proc.stderr
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("redis-tracer:"), proc.stderr
            assert proc.stdout == ""


def test_replay_drives_the_same_pipeline(tmp_path):
    path = tmp_path / "r.rtrace"
    n = write_trace(path, 500)
    proc = cli("replay", str(path), "--max")
    assert proc.returncode == 0, proc.stderr
    assert "GET" in proc.stdout and f"{n:,}" in proc.stdout and "Traceback" not in proc.stderr


def test_replay_paced_by_trace_time(tmp_path):
    import time

    path = tmp_path / "paced.rtrace"
    write_trace(path, 400)  # eventstream spaces records ~6 µs apart: ~5 ms of trace time
    t0 = time.monotonic()
    proc = cli("replay", str(path), "--speed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "GET" in proc.stdout
    slow = cli("replay", str(path), "--speed", "0.002")  # 5 ms of trace time take ~2.4 s
    assert slow.returncode == 0 and time.monotonic() - t0 >= 2.0
    assert cli("replay", str(path), "--speed", "0").returncode != 0


def test_mistyped_option_prints_the_subcommands_usage(tmp_path):
    proc = cli("record", "--durration", "1", "-o", str(tmp_path / "t.rtrace"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("usage: redis-tracer record ")
    assert lines[-1] == "redis-tracer record: error: unrecognized arguments: --durration 1"
    assert not (tmp_path / "t.rtrace").exists()
    report = cli("report", str(tmp_path / "t.rtrace"), "--jsn")
    assert report.returncode == 2 and report.stderr.startswith("usage: redis-tracer report ")
    assert report.stderr.splitlines()[-1] == "redis-tracer report: error: unrecognized arguments: --jsn"
