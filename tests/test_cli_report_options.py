"""`report`, `replay` and `export` options through the real CLI on recordings made here: durations from
the attach and detach times a trace file keeps, --since/--until windows, --hist, the histogram arrays
of --json, --fail-on-lost, exit codes, and the progress bar (only on a terminal)."""
from __future__ import annotations

import datetime
import json
import os
import pty
import subprocess
import sys

from eventstream import Stream, bulk, cmd
from tracer_proc import REPO

from tracer.kernel import events
from tracer.tracefile.recording import TraceWriter

T0 = 1_000_000_000              # eventstream's clock starts here (ns)
OFFSET = 1_700_000_000 * 10**9  # mono -> wall


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tracer", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def recording(path, *, times=True, lost=0, gets=30):
    """GETs at 0.5 s, SETs at 1.5 s, one DEL at 2.5 s; attached at 0 s, detached at 6 s (when `times`)."""
    s = Stream()
    s.accept(7, 40000)
    for at_s, name, n in ((0.5, "GET", gets), (1.5, "SET", 10), (2.5, "DEL", 1)):
        s.at(at_s * 1e6)
        for i in range(n):
            s.read(7, cmd(name, f"k{i}") if name != "SET" else cmd("SET", f"k{i}", "v"))
            s.write(7, b"+OK\r\n" if name == "SET" else (b":1\r\n" if name == "DEL" else bulk(b"v" * (i * 40))),
                    dur_us=5 + i * 30)
    raw = s.raw()
    if lost:
        raw.append(events.encode(events.Event(kind=events.COUNTERS, ts_enter=s.t, ts_exit=s.t, ret=lost,
                                              tgid=s.pid)))
    header = {"targets": [{"pid": s.pid, "port": 6379, "redis_version": "7.0.15"}], "stall_ms": 50,
              "clock": {"mono_to_wall_ns": OFFSET}}
    if times:
        header["attached_ns"] = T0
    with TraceWriter(path, header) as w:
        w.write_many(raw)
        w.write_trailer({"detached_ns": T0 + 6 * 10**9} if times else {})
    return path


def report_json(*args):
    proc = cli("report", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_duration_and_rate_run_from_attach_to_detach(tmp_path):
    path = recording(tmp_path / "t.rtrace")
    assert report_json(str(path))["duration_s"] == 6.0          # not the 2 s between first and last request
    text = cli("report", str(path)).stdout
    assert text.startswith("redis-tracer: traced redis-server pid ") and " for 6.0 s: 41 requests (6.8 req/s)" \
        in " ".join(text.split()), text
    replay = cli("replay", str(path), "--max", "--plain")
    assert replay.returncode == 0 and " for 6.0 s: 41 requests" in " ".join(replay.stdout.split()), replay.stdout


def test_files_without_attach_times_still_read(tmp_path):
    path = recording(tmp_path / "old.rtrace", times=False)
    report = report_json(str(path))
    assert report["requests"] == 41 and 2.4 < report["duration_s"] < 2.6      # first to last record (not 6 s)


def test_since_until_window(tmp_path):
    path = str(recording(tmp_path / "t.rtrace"))
    window = report_json(path, "--since", "1", "--until", "2")
    assert window["requests"] == 10 and list(window["commands"]) == ["SET"] and window["duration_s"] == 1.0
    assert list(report_json(path, "--since", "2")["commands"]) == ["DEL"]
    assert sorted(report_json(path, "--until", "1.9")["commands"]) == ["GET", "SET"]
    # absolute: epoch seconds, the same window as 1..2 s from the attach
    start = (OFFSET + T0) / 1e9
    assert list(report_json(path, "--since", f"{start + 1:.3f}", "--until", f"{start + 2:.3f}")["commands"]) == ["SET"]
    iso = datetime.datetime.fromtimestamp(start + 2.2).isoformat(timespec="milliseconds")     # local time
    assert list(report_json(path, "--since", iso)["commands"]) == ["DEL"]
    for bad in (("--since", "soon"), ("--since", "3", "--until", "1"), ("--since", "-1")):
        proc = cli("report", path, *bad)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, bad


def test_hist_prints_bcc_style_log2_histograms(tmp_path):
    path = str(recording(tmp_path / "t.rtrace", gets=60))
    proc = cli("report", path, "--hist")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "GET latency, 60 requests:"
    assert lines[1] == "     usecs               : count     distribution"
    assert lines[2].startswith("         0 -> 1          : ") and lines[3].startswith("         2 -> 3   ")
    rows = [line for line in lines if " -> " in line]
    assert all(line.count("|") == 2 and len(line.split("|")[1]) == 40 for line in rows)
    assert any(line.endswith("|" + "*" * 40 + "|") for line in rows)           # the fullest bucket
    # the synthetic reads carry no arrival time: no socket-queue phase to draw
    assert [line for line in lines if line.startswith("phase ")] == [
        "phase wait, all commands:", "phase exec, all commands:", "phase reply write, all commands:"]
    only = cli("report", path, "--hist", "set").stdout
    assert only.startswith("SET latency, 10 requests:") and "GET latency" not in only
    missing = cli("report", path, "--hist", "NOPE")
    assert missing.returncode == 2 and "no such command" in missing.stderr


def test_json_carries_the_bucket_arrays(tmp_path):
    path = str(recording(tmp_path / "t.rtrace", gets=60))
    hist = report_json(path)["histograms"]
    assert hist["unit"] == "usecs" and set(hist["commands"]) == {"GET", "SET", "DEL"}
    assert sum(hist["commands"]["GET"]) == 60 and sum(hist["commands"]["SET"]) == 10
    assert set(hist["phases"]) >= {"exec", "reply_write"}
    # the text histogram draws exactly these counts
    drawn = [int(line.split(":")[1].split("|")[0]) for line in cli("report", path, "--hist", "GET").stdout
             .split("\n\n")[0].splitlines()[2:]]
    assert drawn == hist["commands"]["GET"][1:len(drawn) + 1]


def test_exit_codes_and_fail_on_lost(tmp_path):
    clean = str(recording(tmp_path / "clean.rtrace"))
    lossy = str(recording(tmp_path / "lossy.rtrace", lost=7))
    assert cli("report", clean, "--fail-on-lost").returncode == 0
    proc = cli("report", lossy, "--fail-on-lost")
    assert proc.returncode == 3 and "7 events were lost (--fail-on-lost)" in proc.stderr
    assert proc.stdout.startswith("redis-tracer: traced ")                   # the report is printed in full
    assert cli("report", lossy).returncode == 0
    assert cli("replay", lossy, "--max", "--fail-on-lost").returncode == 3
    assert cli("report", str(tmp_path / "missing.rtrace")).returncode == 1    # a runtime failure
    assert cli("replay", clean, "--speed", "0").returncode == 2               # a usage error
    assert cli("report", clean, "--stall-ms", "-1").returncode == 2              # was taken, found nothing
    assert cli("export", clean, "-o", "/dev/null", "--stall-ms", "0").returncode == 2
    assert cli("report").returncode == 2
    assert cli().returncode == 2


def on_a_terminal(args, stream: str, env=None):
    """The CLI with `stream` ("stdout" or "stderr") on a pseudo-terminal, the other one a pipe:
    (exit code, what the pipe got, what was drawn on the terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tracer", *args], cwd=REPO,
                            stdout=slave if stream == "stdout" else subprocess.PIPE,
                            stderr=slave if stream == "stderr" else subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color",
                                 **(env or {})})
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    piped = proc.stdout if stream == "stderr" else proc.stderr
    out = piped.read()
    proc.wait(timeout=120)
    os.close(master)
    return proc.returncode, out.decode(), drawn.decode(errors="replace")


def run_on_a_terminal(*args):
    return on_a_terminal(args, "stderr")


def test_progress_bar_only_on_a_terminal(tmp_path):
    s = Stream()
    s.accept(7, 40000)
    for i in range(60_000):
        s.read(7, cmd("GET", f"k{i}"))
        s.write(7, bulk(b"v"))
    path = tmp_path / "big.rtrace"
    with TraceWriter(path, {"targets": [{"pid": s.pid}]}) as w:
        w.write_many(s.raw())
    for args in (("report", str(path)), ("export", str(path), "-o", str(tmp_path / "x.json")),
                 ("replay", str(path), "--max")):
        rc, out, drawn = run_on_a_terminal(*args)
        assert rc == 0 and f"{args[0]} {path}" in drawn and "━" in drawn, (args, drawn[-500:])
        piped = cli(*args)
        assert piped.returncode == 0 and "━" not in piped.stderr and f"{args[0]} {path}" not in piped.stderr, args


def test_diagnose_a_recording_window_and_fail_on_stall(tmp_path):
    s = Stream()
    s.accept(7, 40000)
    s.read(7, cmd("GET", "a"))
    s.write(7, bulk(b"v"))
    s.at(3_000_000)                                 # a 120 ms stall at 3 s
    s.loop(3_000_000, 3_120_000)
    s.at(3_200_000)
    s.read(7, cmd("GET", "b"))
    s.write(7, bulk(b"v"))
    path = str(tmp_path / "stall.rtrace")
    with TraceWriter(path, {"targets": [{"pid": s.pid}], "stall_ms": 50, "attached_ns": T0}) as w:
        w.write_many(s.raw())
        w.write_trailer({"detached_ns": T0 + 5 * 10**9})
    whole = cli("diagnose", path, "--fail-on-stall")
    assert whole.returncode == 3 and "(--fail-on-stall)" in whole.stderr
    assert "Stalls (main thread busy >= 50 ms): 1" in whole.stdout and " for 5.0 s: " in whole.stdout
    before = cli("diagnose", path, "--until", "2", "--fail-on-stall", "--json")
    assert before.returncode == 0 and json.loads(before.stdout)["stalls"] == []
    assert cli("diagnose", path).returncode == 0
    assert cli("diagnose", "--since", "2").returncode == 2          # a window needs a recording


def run_on_a_terminal_stdout(*args, env=None):
    rc, _, drawn = on_a_terminal(args, "stdout", env)
    return rc, drawn


FIXTURE = os.path.join(REPO, "tests", "fixtures", "single.rtrace")


def test_plain_output_fits_80_columns_without_splitting_words():
    text = cli("report", FIXTURE).stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = " ".join(text.split())
    # long lines wrapped between words: the whole sentences are still there, word by word
    assert "redis-tracer: traced redis-server pid 7286 (port 54549, redis 7.0.15) for 0.5 s: 762 requests" in flat
    advice = [line for line in text.splitlines() if line.strip().startswith("advice:")]
    assert advice and all(not line.endswith("-") for line in text.splitlines())


def test_dashboard_without_highlighter_and_with_no_color():
    rc, drawn = run_on_a_terminal_stdout("replay", FIXTURE, "--max")
    assert rc == 0 and "\x1b[" in drawn
    assert "redis 7.0.15" in drawn or "7.0.15" in drawn     # one run of text: no colour change inside
    rc, drawn = run_on_a_terminal_stdout("replay", FIXTURE, "--max", env={"NO_COLOR": "1"})
    colours = [code for code in ("\x1b[3", "\x1b[9", "38;5;", "38;2;") if code in drawn]
    assert rc == 0 and not colours, colours
