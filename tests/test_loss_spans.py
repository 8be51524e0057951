"""A record neither ring took (a LOST record in the stream): the requests it affects are reported as
lost, with the connection and time window, instead of being silently mispaired or counted unanswered."""
from __future__ import annotations

import io

from eventstream import PID, Stream, bulk, cmd
from rich.console import Console

from tracer import events
from tracer.pipeline import Pipeline
from tracer.report_text import print_report


def lost(stream: Stream, fd: int, records: int = 1) -> events.Event:
    """What the session makes of the kernel's lost_fds entry, placed where the loss happened."""
    ev = events.Event(kind=events.LOST, tgid=stream.pid, tid=stream.pid, fd=fd, ts_enter=stream.t,
                      ts_exit=stream.t + 1000, ret=records)
    stream.out.append(ev)
    stream.t += 2000
    return ev


def test_a_lost_reply_is_reported_not_paired_with_the_next_one():
    # issue 19: GET's reply record was lost; the next request on the connection is INCR
    s = Stream()
    s.accept(7, 50000)
    s.wake()
    s.read(7, cmd("GET", "k"))
    lost(s, 7)                       # the WRITE of GET's reply reached neither ring
    s.read(7, cmd("INCR", "n"))
    s.write(7, b":1\r\n")
    s.read(7, cmd("GET", "k"))
    s.write(7, bulk(b"v"))
    got = []
    p = Pipeline(on_request=got.append)
    p.feed(s.raw())
    p.finish()
    assert [(r.command, r.reply_type) for r in got] == [("GET", "lost"), ("INCR", "ok"), ("GET", "ok")]
    assert got[1].reply_bytes == 4 and got[2].reply_bytes == len(bulk(b"v"))
    report = p.report({"pid": PID, "port": 6379})
    assert report["unanswered"] == 0 and report["lost_requests"] == 1 and report["loss_spans"] == 1
    (span,) = report["losses"]
    assert (span["client"], span["fd"], span["pid"], span["records"], span["requests"]) == \
        ("127.0.0.1:50000", 7, PID, 1, 1)
    assert 0 < span["start_s"] <= span["end_s"]
    assert p.stitcher.stats.lost_records == 1
    # the text report names the connection and the window too
    out = io.StringIO()
    print_report(report, console=Console(file=out, width=200))
    assert "127.0.0.1:50000 (pid 1000, conn 1): 1 records between" in out.getvalue()


def test_a_lost_read_restarts_the_parser_at_the_next_record():
    # the read with the first half of a SET was lost: the second half must not be parsed as a command
    s = Stream()
    s.accept(7, 50000)
    frame = cmd("SET", "key", "value")
    s.read(7, frame[:9])
    lost(s, 7)
    s.read(7, cmd("PING"))
    s.write(7, b"+PONG\r\n")
    got = []
    p = Pipeline(on_request=got.append)
    p.feed(s.raw())
    p.finish()
    assert [(r.command, r.reply_type) for r in got] == [("PING", "ok")]
    assert p.report({"pid": PID, "port": 6379})["losses"][0]["requests"] == 0
