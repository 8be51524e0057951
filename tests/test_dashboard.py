"""The live dashboard and the plain summaries, rendered headless from known data.

Two sources: a hand-built snapshot (the Analyzer.snapshot schema), and a synthetic stream of
Requests and a busy span fed through the real Analyzer, so the figures on screen are checked
against what the analysis computed.
"""
from __future__ import annotations

import copy
import io
import re

import pytest
from rich.console import Console

from tracer.dashboards import live as dashboard, plain
from tracer.dashboards.live import sparkline, split_cells
from tracer.schema import Report, ScreenHeader, Snapshot
from tracer.stitch.model import BusySpan, Connection, FileSync, Request
from tracer.units import fmt_us


# The fixtures below are written in the views' JSON form (tracer.schema): the views read them back.
def _view(cls, doc):
    return cls.from_json(doc) if isinstance(doc, dict) else doc


def render(snap, header):
    return dashboard.render(_view(Snapshot, snap), _view(ScreenHeader, header))


class Dashboard(dashboard.Dashboard):
    def render(self, snap, header):
        return super().render(_view(Snapshot, snap), _view(ScreenHeader, header))


def summary_block(snap, header):
    return plain.summary_block(_view(Snapshot, snap), _view(ScreenHeader, header))


def final_summary(report):
    return plain.final_summary(_view(Report, report))

HEADER = {"title": "live", "pid": 4242, "port": 40123, "redis_version": "7.0.15", "io_threads": 1,
          "aof": "everysec", "probe_mode": "syscalls", "stall_ms": 50, "elapsed_s": 12.4, "rps": 1228.5,
          "lost_events": 0}

SNAPSHOT = {
    "elapsed_s": 12.4, "requests": 15234, "rps": 1228.5, "lost_events": 0,
    "commands": {
        "GET": {"count": 8123, "rps": 655.1, "p50_us": 42.0, "p99_us": 180.5, "p999_us": 2400.0, "max_us": 231000.0,
                "exec_share": 0.18, "spark": [0, 3, 40, 310, 1200, 2900, 2300, 900, 300, 90, 40, 10, 5, 2, 0, 1]},
        "SET": {"count": 3050, "rps": 246.0, "p50_us": 55.0, "p99_us": 240.0, "p999_us": 3100.0, "max_us": 228000.0,
                "exec_share": 0.09, "spark": [0, 1, 20, 200, 800, 1000, 700, 200, 80, 30, 10, 5, 2, 1, 0, 1]},
        "HSET": {"count": 2100, "rps": 169.4, "p50_us": 310.0, "p99_us": 1900.0, "p999_us": 14000.0,
                 "max_us": 15500.0, "exec_share": 0.31, "spark": [0, 0, 2, 20, 100, 400, 800, 500, 200, 60, 15, 3]},
        "DEL": {"count": 2, "rps": 0.2, "p50_us": 221000.0, "p99_us": 254000.0, "p999_us": 254000.0,
                "max_us": 254000.0, "exec_share": 0.27, "spark": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]},
    },
    "phases_us_total": {"socket_queue": 120000.0, "wait": 2400000.0, "exec": 900000.0, "reply_write": 150000.0},
    "busy_ratio": 0.37,
    "slowest": [
        {"client": "127.0.0.1:50412", "command": "DEL", "key": "demo:bighash", "latency_us": 254300.0,
         "phases": [["socket_queue", 20.0], ["wait", 5.0], ["exec", 254200.0], ["reply_write", 75.0]]},
        {"client": "127.0.0.1:50400", "command": "GET", "key": "demo:user:0", "latency_us": 231000.0,
         "phases": [["socket_queue", 180000.0], ["wait", 50900.0], ["exec", 30.0], ["reply_write", 70.0]]},
    ],
    "stalls": [
        {"start_s": 3.2, "duration_ms": 221.0, "command": "EVAL", "key": "demo:slow-lua", "client": "127.0.0.1:50413",
         "victims": 3, "victim_added_ms": 210.5, "class": "lua",
         "advice": ["Bound scripts with `lua-time-limit` and keep each script short."]},
        {"start_s": 9.4, "duration_ms": 254.3, "command": "DEL", "key": "demo:bighash", "client": "127.0.0.1:50412",
         "victims": 5, "victim_added_ms": 252.0, "class": "bigkey",
         "advice": ["Delete big keys with UNLINK instead of DEL, or set `lazyfree-lazy-user-del yes`."]},
    ],
    "fsync": {"count": 12, "main_thread": 0, "p99_us": 2100.0, "max_us": 3500.0, "aof_writes": 9100,
              "aof_write_max_us": 800.0},
    "connections": {"accepted": 31, "closed": 25, "open": 6, "accept_queue_p99_us": 35.0, "accept_rate": 2.5},
    "hot_keys": [["demo:user:0", 1800], ["demo:user:1", 950]],
    "big_keys": [["demo:bighash", 23100000]],
}


def screen(renderable, width=120, height=40) -> tuple[str, Console]:
    console = Console(record=True, width=width, height=height, force_terminal=True, color_system="truecolor",
                      file=io.StringIO())
    console.print(renderable)
    return console.export_text(), console


def row_of(text: str, first_cell: str) -> str:
    """The screen line whose first cell (after the panel border) is `first_cell`."""
    for line in text.splitlines():
        cells = line.strip("│ ").split()
        if cells and cells[0] == first_cell:
            return line
    raise AssertionError(f"no row starting with {first_cell!r} in:\n{text}")


# -- a known snapshot -------------------------------------------------------------------------------
def test_commands_table_rows_and_figures():
    text, _ = screen(render(SNAPSHOT, HEADER))
    get = row_of(text, "GET")
    for figure in ("8,123", "655", "42µs", "180µs", "2.40ms", "231ms", "18%"):
        assert figure in get, (figure, get)
    sset = row_of(text, "SET")
    assert "3,050" in sset and "240µs" in sset and "3.10ms" in sset
    assert "14.0ms" in row_of(text, "HSET")
    # the histogram column is there and GET's peak bin is drawn full height
    assert "latency histogram" in text and "█" in get
    # busiest first
    assert text.index("GET ") < text.index("SET ") < text.index("HSET ") < text.index("DEL  ")


def test_header_and_panels():
    text, _ = screen(render(SNAPSHOT, HEADER))
    first = text.splitlines()[0]
    for fact in ("pid 4242", ":40123", "redis 7.0.15", "io-threads 1", "aof everysec", "syscalls", "12.4s",
                 "1,228 req/s", "lost events 0"):
        assert fact in first, (fact, first)
    for title in ("commands", "request path", "AOF / fsync", "connections", "stalls", "slowest requests"):
        assert title in text
    # request path shares and the busy ratio
    assert "queue 3%" in text and "wait 67%" in text and "exec 25%" in text and "reply 4%" in text
    assert "main thread busy" in text and "37%" in text
    # AOF and connections
    assert "fsyncs 12" in text and "2.10ms" in text and "writes 9,100" in text
    assert "open 6" in text and "accepted 31" in text and "2.5/s" in text and "queue p99 35µs" in text


def test_stalls_longest_first_with_culprit_victims_and_advice():
    text, _ = screen(render(SNAPSHOT, HEADER))
    del_row = row_of(text, "254ms")
    assert "DEL demo:bighash" in del_row
    cells = del_row.split()
    assert cells[cells.index("demo:bighash") + 1] == "5"  # victims
    assert "+252ms" in del_row and "bigkey" in del_row and "+9.4s" in del_row
    assert "UNLINK instead of DEL" in text
    lua_row = row_of(text, "221ms")
    assert "EVAL demo:slow-lua" in lua_row and "lua" in lua_row
    assert text.index("DEL demo:bighash") < text.index("EVAL demo:slow-lua")  # longest first


def test_slowest_requests_with_waterfall():
    text, console = screen(render(SNAPSHOT, HEADER))
    row = row_of(text, "231ms")
    assert "GET" in row and "demo:user:0" in row and "127.0.0.1:50400" in row and "queue 78%" in row
    assert "█" * 20 in row
    # each phase of the waterfall has its own colour
    colours = {seg.style.color.name for seg in console.render(Dashboard().render(SNAPSHOT, HEADER))
               if seg.text and set(seg.text) == {"█"} and seg.style and seg.style.color}
    assert {"dodger_blue1", "gold3", "green3", "orchid"} <= colours


def _style_of(console: Console, renderable, needle: str):
    for seg in console.render(renderable):
        if needle in seg.text:
            return seg.style
    raise AssertionError(f"{needle!r} not rendered")


def test_lost_events_red_only_when_non_zero():
    console = Console(width=120, height=40, force_terminal=True, color_system="truecolor")
    lost = dict(HEADER, lost_events=7)
    style = _style_of(console, render(dict(SNAPSHOT, lost_events=7), lost), "lost events 7")
    assert style.bgcolor is not None and style.bgcolor.name == "red"
    style = _style_of(console, render(SNAPSHOT, HEADER), "lost events 0")
    assert style.bgcolor is None and (style.color is None or style.color.name != "red")
    assert "lost events 7" in screen(render(SNAPSHOT, lost))[0].splitlines()[0]


@pytest.mark.parametrize("width,height", [(120, 40), (100, 30), (80, 24)])
def test_fits_the_screen(width, height):
    text, _ = screen(render(SNAPSHOT, HEADER), width, height)
    lines = text.rstrip("\n").splitlines()
    assert len(lines) <= height
    assert max(len(line) for line in lines) <= width
    # the essentials survive at every size
    assert "GET" in text and "8,123" in text and "DEL demo:bighash" in text and "lost events 0" in text


def test_narrow_screen_drops_columns_not_rows():
    text, _ = screen(render(SNAPSHOT, HEADER), 80, 24)
    assert "latency histogram" not in text  # dropped first
    assert "p99" in text and "180µs" in row_of(text, "GET")
    assert "request path · AOF · connections" in text  # the strip folds into one panel


def test_empty_snapshot_renders():
    text, _ = screen(render({}, {"title": "live", "stall_ms": 50}))
    assert "waiting" in text and "no stall ≥ 50 ms yet" in text and "lost events 0" in text


def test_stall_list_and_commands_overflow_are_summarised():
    snap = copy.deepcopy(SNAPSHOT)
    for i in range(30):
        snap["commands"][f"CMD{i}"] = {"count": 1, "p99_us": 10.0}
    snap["stalls"] = [dict(SNAPSHOT["stalls"][1], duration_ms=60.0 + i) for i in range(12)]
    text, _ = screen(render(snap, HEADER), 120, 40)
    assert re.search(r"\+\d+ more", text)
    assert len(text.rstrip("\n").splitlines()) <= 40


def test_helpers():
    assert fmt_us(None) == "-" and fmt_us(85) == "85µs" and fmt_us(1240) == "1.24ms"
    assert fmt_us(15500) == "15.5ms" and fmt_us(254000) == "254ms" and fmt_us(1_520_000) == "1.52s"
    assert sparkline([0, 1, 8]) == " ▁█"
    assert len(sparkline(list(range(40)), 10)) == 10
    assert split_cells([1, 1, 2], 8) == [2, 2, 4] and sum(split_cells([3, 0, 0.001, 7], 30)) == 30


# -- the plain summaries --------------------------------------------------------------------------------
def test_plain_block_has_the_same_facts_and_no_ansi():
    block = summary_block(SNAPSHOT, HEADER)
    assert "\x1b" not in block
    assert "15,234 requests" in block and "1,228 req/s" in block and "lost events 0" in block
    get = next(line for line in block.splitlines() if line.strip().startswith("GET"))
    # its row with rate and p99.9 is wider than 80 columns: it degrades to `key: value` form
    assert get.startswith("  GET: count 8,123, 655 req/s") and "p99 180µs" in get and "p99.9 2.40ms" in get
    assert all(len(line) <= 80 for line in block.splitlines())
    assert "stalls: 2, longest 254ms DEL demo:bighash" in block and "5 victims" in block
    assert "12 fsyncs" in block and "31 accepted" in block
    assert "LOST EVENTS" in summary_block(dict(SNAPSHOT, lost_events=3), dict(HEADER, lost_events=3))


def test_final_summary_stalls_longest_first():
    report = dict(SNAPSHOT, target={"pid": 4242, "port": 40123, "redis_version": "7.0.15"}, stall_ms=50)
    text = final_summary(report)
    assert "\x1b" not in text
    assert "redis-server pid 4242" in text and "15,234 requests" in text and "0 lost events" in text
    first = re.search(r"1\.\s+254ms  DEL demo:bighash", text)
    second = re.search(r"2\.\s+221ms  EVAL demo:slow-lua", text)
    assert first and second and first.start() < second.start()
    assert "victims: 5 requests of other clients delayed, up to +252ms" in text
    assert "advice: Delete big keys with UNLINK" in text
    assert "Hot keys: demo:user:0 (1,800)" in text and "demo:bighash (23.1MB)" in text  # decimal units


# -- a synthetic stream through the real Analyzer ---------------------------------------------------------
MS = 1_000_000
US = 1_000
T0 = 5_000 * 1_000_000_000  # 5000 s of CLOCK_MONOTONIC
PID = 777


def _req(conn_id, client, command, key, arrival, exec_ns=20 * US, queue=5 * US, reply_at=None, reply_bytes=5):
    r = Request()
    r.tgid = r.thread = r.reply_thread = PID
    r.conn_id, r.fd, r.client = conn_id, 10 + conn_id, client
    r.command, r.key, r.argc = command, key, 2
    r.arrival_ts = arrival
    r.wake_ts = arrival + queue
    r.read_start_ts = r.wake_ts + 2 * US
    r.read_end_ts = r.read_start_ts + 3 * US
    r.exec_start_ts = r.read_end_ts
    r.exec_end_ts = r.exec_start_ts + exec_ns
    r.reply_start_ts = reply_at or r.exec_end_ts + 2 * US
    r.reply_end_ts = r.reply_start_ts + 8 * US
    r.reply_type, r.reply_bytes, r.request_bytes = "ok", reply_bytes, 30
    return r


@pytest.fixture(scope="module")
def analysed():
    analysis = pytest.importorskip("tracer.analyze.analysis")
    an = analysis.Analyzer(stall_ms=50, top_n=10)
    clients = {i: f"10.0.0.{i}:4000{i}" for i in range(1, 4)}
    for i, c in clients.items():
        conn = Connection(PID, i, 10 + i, c)
        conn.established_ts, conn.accept_ts = T0 - 10 * MS, T0 - 10 * MS + 40 * US
        an.on_accept(conn)
    t = T0
    # 300 quick GETs and 120 SETs before the stall
    for n in range(300):
        an.on_request(_req(1 + n % 3, clients[1 + n % 3], "GET", f"user:{n % 7}", t, exec_ns=(10 + n % 50) * US))
        t += 1 * MS
        if n % 5 == 0:
            an.on_request(_req(1 + n % 3, clients[1 + n % 3], "SET", f"user:{n % 7}", t))
        if n % 50 == 0:
            an.on_sync(FileSync(PID, PID + 1, 30, "fdatasync", t, t + 2 * MS))
    # the culprit: DEL of a big key, 300 ms of execution
    start = t
    culprit = _req(9, "10.0.0.9:50009", "DEL", "big:hash", start, exec_ns=300 * MS, queue=1 * US)
    an.on_request(culprit)
    an.on_busy(BusySpan(PID, culprit.wake_ts, culprit.exec_end_ts + 5 * US))
    # victims: one GET per client arrived during the stall, served right after it
    after = culprit.exec_end_ts + 10 * US
    for i, c in clients.items():
        arrival = start + (50 + 40 * i) * MS
        v = _req(i, c, "GET", "user:1", arrival, queue=after - arrival)
        an.on_request(v)
    # 3 s more of normal traffic closes the stall's join window
    t = after + 1 * MS
    for n in range(300):
        an.on_request(_req(1 + n % 3, clients[1 + n % 3], "GET", f"user:{n % 7}", t))
        t += 10 * MS
    an.set_counters(0, 400 * MS, 3600 * MS)
    return an, t


def test_analyzer_stream_on_screen(analysed):
    an, now = analysed
    view = an.snapshot(now)
    snap = view.to_json()
    stalls = [s for s in snap["stalls"] if s["command"] == "DEL"]
    assert stalls, snap["stalls"]
    stall = stalls[0]
    assert stall["key"] == "big:hash" and stall["victims"] == 3
    text, _ = screen(render(view, dict(HEADER, lost_events=0)))
    get = row_of(text, "GET")
    assert f"{snap['commands']['GET']['count']:,}" in get
    assert fmt_us(snap["commands"]["GET"]["p99_us"]) in get
    assert fmt_us(snap["commands"]["GET"]["max_us"]) in get
    sset = row_of(text, "SET")
    assert f"{snap['commands']['SET']['count']:,}" in sset
    del_row = row_of(text, fmt_us(stall["duration_ms"] * 1000))
    assert "DEL big:hash" in del_row
    cells = del_row.split()
    assert cells[cells.index("big:hash") + 1] == "3"
    assert "UNLINK" in text
    block = summary_block(view, HEADER)
    assert "DEL big:hash" in block and "3 victims" in block
    assert f"{snap['commands']['GET']['count']:,}" in block


def test_analyzer_report_final_summary(analysed):
    an, _ = analysed
    an.finish()
    report = an.report({"pid": PID, "port": 6379, "redis_version": "7.0.15"}).to_json()
    text = final_summary(dict(report, stall_ms=50))
    assert "redis-server pid 777" in text
    assert "DEL big:hash" in text and "victims: 3 requests" in text and "advice:" in text
    assert f"{report['requests']:,} requests" in text
    get = next(line for line in text.splitlines() if line.strip().startswith("GET"))
    assert f"{report['commands']['GET']['count']:,}" in get


def test_nodes_panel_one_row_per_instance():
    from io import StringIO

    from rich.console import Console

    snap = {"requests": 30, "rps": 10.0, "commands": {}, "stalls": [], "slowest": [],
            "nodes": [{"pid": 11, "port": 7000, "requests": 10, "rps": 3.5, "p99_us": 120.0, "busy_ratio": 0.25,
                       "stalls": 2},
                      {"pid": 12, "port": 7001, "requests": 20, "rps": 6.5, "p99_us": 80.0, "busy_ratio": 0.1,
                       "stalls": 0}]}
    console = Console(record=True, width=120, height=45, file=StringIO())
    console.print(Dashboard().render(snap, {"pid": 11, "port": 7000, "stall_ms": 50}))
    text = console.export_text()
    assert "nodes" in text
    assert ":7000 pid 11" in text and ":7001 pid 12" in text
    row = next(line for line in text.splitlines() if ":7000 pid 11" in line)
    assert "120" in row and "25" in row and "2" in row


# -- cache patterns ---------------------------------------------------------------------------------------
STAMPEDE = {"kind": "stampede", "keys": ["product:42"], "clients": ["127.0.0.1:50001"], "window_ms": 14.0,
            "count": 1, "evidence": ["8 clients got nil for product:42 within 14 ms; the first SET came 46 ms after"],
            "advice": ["let one caller rebuild the key: a mutex (SET lock:<key> <id> NX PX <ms>)"], "input": "full"}
RACE = dict(STAMPEDE, kind="race", keys=["stock:1"], evidence=["5 times a client read stock:1 and wrote it back"],
            advice=["do the check and the write in one atomic step: a Lua script"])


def test_patterns_panel_with_evidence_and_advice():
    text, _ = screen(render(dict(SNAPSHOT, patterns=[STAMPEDE, RACE]), HEADER), 120, 48)
    assert "cache patterns 2" in text
    assert "stampede" in row_of(text, "stampede") and "8 clients got nil for product:42" in text
    assert "race" in row_of(text, "race") and "↳ do the check and the write in one atomic step" in text
    assert "sampled" not in text
    text, _ = screen(render(dict(SNAPSHOT, patterns_input="sampled"), HEADER), 120, 48)
    assert "no stampede, penetration, avalanche, race, hot key or big value seen yet" in text
    assert "trace with --full" in text


@pytest.mark.parametrize("width,height", [(120, 40), (80, 24)])
def test_patterns_panel_fits_the_screen(width, height):
    text, _ = screen(render(dict(SNAPSHOT, patterns=[STAMPEDE, RACE] * 3), HEADER), width, height)
    lines = text.rstrip("\n").splitlines()
    assert len(lines) <= height and "stampede" in text and "DEL demo:bighash" in text


def test_plain_views_list_patterns_with_advice():
    report = dict(SNAPSHOT, target={"pid": 1}, patterns=[STAMPEDE], patterns_input="sampled")
    text = final_summary(report)
    assert "Cache patterns: 1" in text and "  - stampede: 8 clients got nil for product:42" in text
    assert "advice: let one caller rebuild the key" in text and "trace with --full" in text
    assert "Cache patterns: none found" in final_summary(dict(SNAPSHOT, target={"pid": 1}))
    assert "patterns: stampede product:42" in summary_block(dict(SNAPSHOT, patterns=[STAMPEDE]), HEADER)
