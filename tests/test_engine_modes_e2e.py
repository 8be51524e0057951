"""Engine mode (`--engine`) through the one runtime, on real redis-servers: record/report counts exact
against INFO commandstats, live == report == replay, a BigKey DEL stall named from REQ records, and
`trace --min-ms` showing only slow requests."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_diagnosis_e2e import bigkey_del_under_load
from tracer_proc import REPO, TracerProcess, json_lines, report_of

pytestmark = pytest.mark.bpf


def commandstats(client) -> dict:
    """{COMMAND: calls} from INFO commandstats (subcommands folded into their command)."""
    out: dict = {}
    for name, stats in client.info("commandstats").items():
        cmd = name.removeprefix("cmdstat_").split("|")[0].upper()
        out[cmd] = out.get(cmd, 0) + int(stats["calls"])
    return out


def benchmark(port: int, *extra: str) -> None:
    subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", "20000", "-c", "8",
                    "-t", "set,get", "-q", *extra], check=True, capture_output=True, timeout=120)


@pytest.mark.parametrize("pipelining", [(), ("-P", "16")], ids=["plain", "P16"])
def test_engine_record_counts_exact_and_live_equals_report_and_replay(redis_server, tmp_path, pipelining):
    from tracer.runtime import session

    trace, live_json = tmp_path / "e.rtrace", tmp_path / "live.json"
    tracer = TracerProcess("record", "--engine", "--port", str(redis_server.port), "-o", str(trace),
                           "--json-out", str(live_json))
    c = redis_server.client()
    c.config_resetstat()
    before = commandstats(c)
    benchmark(redis_server.port, *pipelining)
    after = commandstats(c)
    c.close()
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()

    report = report_of(trace)
    assert report["mode"] == "engine" and report["schema"] == 1
    for name in ("SET", "GET"):
        sent = after.get(name, 0) - before.get(name, 0)
        assert sent == 20000
        assert report["commands"][name]["count"] == sent, (name, report["commands"][name])
        row = report["commands"][name]
        assert 0 < row["p50_us"] <= row["p99_us"] <= row["max_us"]
    assert set(report["phases_us_total"]) == {"socket_queue", "wait", "exec", "reply_write"}
    assert report["phases_us_total"]["exec"] > 0
    # the live analysis is the very same JSON, and so is a replay of the recording
    assert json.loads(live_json.read_text()) == report
    replayed = session.replay(str(trace), speed=None, mode="quiet")
    assert replayed.report.to_json() == report
    assert replayed.snapshot.commands["GET"].count == 20000 and replayed.header.probe_mode == "engine"


def test_engine_bigkey_del_stall_names_culprit_and_victims(redis_server, tmp_path):
    report, del_rtt_ms, load = bigkey_del_under_load(redis_server, tmp_path / "del.rtrace", "--engine")
    assert report["mode"] == "engine"
    stall = report["stalls"][0]
    assert stall["command"] == "DEL" and stall["key"] == "big:hash" and stall["class"] == "bigkey", stall
    assert abs(stall["duration_ms"] - del_rtt_ms) <= 0.2 * del_rtt_ms, (stall, del_rtt_ms)
    assert stall["victims"] >= 1
    assert report["commands"]["GET"]["count"] == sum(load.count)     # every GET counted, not just the records
    assert report["commands"]["DEL"]["count"] == 1


def test_engine_trace_min_ms_shows_only_slow_requests(redis_factory):
    server = redis_factory(enable_debug_command="yes")
    tracer = TracerProcess("trace", "--engine", "--json", "--min-ms", "30", "--port", str(server.port))
    c = server.client()
    for i in range(300):
        c.set(f"k{i}", i)
        c.get(f"k{i}")
    c.execute_command("DEBUG", "SLEEP", "0.05")
    for i in range(100):
        c.get(f"k{i}")
    c.execute_command("DEBUG", "SLEEP", "0.08")
    c.close()
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    lines = json_lines(out)
    # named with their subcommand, as --full names them
    assert [line["command"] for line in lines] == ["DEBUG SLEEP", "DEBUG SLEEP"], lines
    assert all(line["latency_us"] >= 30_000 for line in lines), lines
    assert lines[0]["latency_us"] < lines[1]["latency_us"]


def test_show_values_requires_full(redis_server):
    proc = subprocess.run([sys.executable, "-m", "tracer", "record", "--engine", "--show-values", "--port",
                           str(redis_server.port), "-o", "/nonexistent-dir/x.rtrace"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--show-values requires --full" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_engine_recording_never_holds_values_of_a_connection_left_to_user_space(redis_server, tmp_path):
    """Pipelined 1000-field HSETs run the kernel parser out of budget inside a command: the connection
    goes raw, its reads and writes come up whole. The recording masks their values (reads: by the
    RESP parser's spans; writes: whole), and the engine's own records never carry one."""
    from tracer.kernel import events
    from tracer.tracefile.recording import TraceReader

    trace = tmp_path / "raw.rtrace"
    tracer = TracerProcess("record", "--engine", "--port", str(redis_server.port), "-o", str(trace))
    c = redis_server.client(socket_timeout=30)
    secret = "topsecret-value-0123456789"
    for lo in range(0, 40_000, 4000):
        pipe = c.pipeline(transaction=False)
        for b in range(lo, lo + 4000, 1000):
            pipe.hset("big", mapping={f"field:{i}": secret for i in range(b, b + 1000)})
        pipe.execute()
    assert c.hget("big", "field:7") == secret.encode()
    c.close()
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    raw_writes = 0
    with TraceReader(trace) as reader:
        for raw in reader.records():
            assert secret[:9].encode() not in raw
            raw_writes += raw[events.KIND_BYTE] == events.WRITE and raw[events.FLAGS_BYTE] & events.RTF_ENGINE_RAW
    assert raw_writes, "the scenario did not leave a connection to user space"


def test_engine_times_the_commands_of_a_connection_left_to_user_space(redis_server, tmp_path):
    """A connection the kernel left to user space (pipelined 1000-field HSETs ran its parse budget
    out inside a command) is stitched in user space, and its requests are timed into the command
    table: the demo showed EVALSHA with p50/p99/max 0 µs beside a 249 ms slowest request. The
    percentiles lie within the client's round trips, and live, report and replay agree."""
    import socket
    import time

    from tracer.kernel import events
    from tracer.runtime import session
    from tracer.tracefile.recording import TraceReader

    trace, live_json = tmp_path / "raw.rtrace", tmp_path / "live.json"
    tracer = TracerProcess("record", "--port", str(redis_server.port), "-o", str(trace), "--json-out", str(live_json))
    c = redis_server.client(socket_timeout=30)
    for lo in range(0, 8000, 4000):
        pipe = c.pipeline(transaction=False)
        for b in range(lo, lo + 4000, 1000):
            pipe.hset("big", mapping={f"field:{i}": "v" for i in range(b, b + 1000)})
        pipe.execute()
    sha = c.script_load("local i = 0 while i < tonumber(ARGV[1]) do i = i + 1 end return i")
    rtts_ms = []
    for _ in range(5):          # the pool hands back the same connection: the one left to user space
        t0 = time.perf_counter()
        assert c.evalsha(sha, 0, 1_500_000) == 1_500_000
        rtts_ms.append((time.perf_counter() - t0) * 1e3)
    c.close()
    # inline commands on a connection the kernel keeps parsing: each read goes up whole, and so
    # do the writes after it (before, their replies were never seen: counted, not timed)
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=30) as s:
        for line in (b"PING\r\n", b"PING\r\n", f"EVALSHA {sha} 0 1500000\r\n".encode()):
            t0 = time.perf_counter()
            s.sendall(line)
            reply = s.recv(100)
            while not reply.endswith(b"\r\n"):
                reply += s.recv(100)
            if line.startswith(b"EVALSHA"):
                assert reply == b":1500000\r\n"
                rtts_ms.append((time.perf_counter() - t0) * 1e3)
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    with TraceReader(trace) as reader:
        raw_writes = sum(raw[events.KIND_BYTE] == events.WRITE and bool(raw[events.FLAGS_BYTE] & events.RTF_ENGINE_RAW)
                         for raw in reader.records())
    assert raw_writes >= 5, "the scenario did not leave the connection to user space"

    report = report_of(trace)
    assert report["mode"] == "engine"
    row = report["commands"]["EVALSHA"]
    assert row["count"] == 6, row
    assert 0.8 * min(rtts_ms) <= row["p50_us"] / 1e3 <= row["max_us"] / 1e3 <= 1.05 * max(rtts_ms) + 1, \
        (row, rtts_ms)
    assert report["commands"]["HSET"]["count"] == 8 and report["commands"]["HSET"]["p99_us"] > 0
    assert report["commands"]["PING"]["count"] == 2 and 0 < report["commands"]["PING"]["p50_us"] < min(rtts_ms) * 1e3
    assert report["phases_us_total"]["exec"] >= 0.8 * sum(rtts_ms) * 1e3 * 0.8
    assert json.loads(live_json.read_text()) == report
    replayed = session.replay(str(trace), speed=None, mode="quiet")
    assert replayed.report.to_json() == report
