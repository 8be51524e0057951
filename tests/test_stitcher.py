"""The stitcher on synthetic event streams: every request path case, no root needed."""
from __future__ import annotations

from eventstream import Stream, bulk, cmd

from tracer.stitch.stitcher import Stitcher


def run(stream: Stream, **kw):
    got, syncs, busy, conns = [], [], [], []
    st = Stitcher(on_request=got.append, on_sync=syncs.append, on_busy=busy.append, on_conn=conns.append, **kw)
    st.feed_raw(stream.raw())
    st.finish()
    return got, st, syncs, busy, conns


def test_single_get_has_every_phase():
    s = Stream()
    s.accept(7, 50000)
    s.wake()
    s.read(7, cmd("GET", "user:1"), arrival_us_before=30)
    s.write(7, bulk(b"alice"))
    (r,), st, *_ = run(s)
    assert (r.command, r.key, r.argc, r.client) == ("GET", "user:1", 2, "127.0.0.1:50000")
    assert r.request_bytes == len(cmd("GET", "user:1")) and r.reply_bytes == len(bulk(b"alice"))
    assert r.reply_type == "ok"
    ph = r.phases_us()
    assert ph["socket_queue"] is not None and ph["socket_queue"] > 0
    assert ph["exec"] is not None and ph["reply_write"] == 5.0
    assert r.latency_ns == r.reply_end_ts - r.arrival_ts
    parts = sum(v for v in ph.values() if v)
    assert abs(parts - r.latency_ns / 1000) < 0.01  # phases add up to the latency


def test_pipelined_batch_in_one_read_is_every_command():
    s = Stream()
    s.accept(7, 50000)
    s.wake()
    s.read(7, b"".join(cmd("GET", f"k{i}") for i in range(16)), arrival_us_before=10)
    s.write(7, b"".join(bulk(b"v%d" % i) for i in range(16)))
    got, st, *_ = run(s)
    assert [r.key for r in got] == [f"k{i}" for i in range(16)]
    assert all(r.batch == 16 and r.reply_type == "ok" for r in got)
    assert [r.reply_bytes for r in got] == [len(bulk(b"v%d" % i)) for i in range(16)]
    execs = [r.exec_ns for r in got]
    assert all(e is not None and e > 0 for e in execs)
    assert got[0].exec_end_ts <= got[1].exec_start_ts


def test_command_split_across_reads_starts_at_first_arrival():
    frame = cmd("SET", "split", "value")
    s = Stream()
    s.accept(7, 50000)
    first = s.read(7, frame[:5], arrival_us_before=10)
    s.at(100_000).read(7, frame[5:20], arrival_us_before=10)
    s.at(200_000).read(7, frame[20:], arrival_us_before=10)
    s.write(7, b"+OK\r\n")
    (r,), *_ = run(s)
    assert r.command == "SET" and r.request_bytes == len(frame)
    assert r.arrival_ts == first.aux_ts and r.latency_ns >= 200_000_000


def test_5mb_value_sizes_exact_with_4k_capture():
    value = b"x" * (5 * 1024 * 1024)
    frame = cmd("SET", "big", value)
    s = Stream(capture=4096)
    s.accept(7, 50000)
    for off in range(0, len(frame), 65536):
        s.read(7, frame[off:off + 65536])
    s.write(7, b"+OK\r\n")
    s.read(7, cmd("GET", "big"))
    reply = bulk(value)
    for off in range(0, len(reply), 16384):
        s.write(7, reply[off:off + 16384])
    got, st, *_ = run(s)
    assert [(r.command, r.request_bytes, r.reply_bytes) for r in got] == [
        ("SET", len(frame), 5), ("GET", len(cmd("GET", "big")), len(reply))]
    get = got[1]
    assert get.reply_write_ns > 16384 // 16384 * 5_000  # spans all the writes
    assert st.stats.undecodable == 0


def test_multi_exec_pairs_queued_replies():
    s = Stream()
    s.accept(7, 1)
    s.read(7, cmd("MULTI") + cmd("INCR", "a") + cmd("INCR", "b") + cmd("EXEC"))
    s.write(7, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n:1\r\n")
    got, *_ = run(s)
    assert [r.command for r in got] == ["MULTI", "INCR", "INCR", "EXEC"]
    assert [r.reply_bytes for r in got] == [5, 9, 9, len(b"*2\r\n:1\r\n:1\r\n")]


def test_blocking_command_pairs_with_late_reply():
    s = Stream()
    s.accept(7, 1)
    s.accept(8, 2)
    s.read(7, cmd("BLPOP", "q", "0"))
    s.at(50_000).read(8, cmd("LPUSH", "q", "job"))
    s.write(8, b":1\r\n")
    s.write(7, b"*2\r\n$1\r\nq\r\n$3\r\njob\r\n")
    got, *_ = run(s)
    (blpop,) = [r for r in got if r.command == "BLPOP"]
    assert blpop.key == "q" and blpop.latency_ns >= 50_000_000 and blpop.reply_type == "ok"


def test_pubsub_messages_are_not_replies():
    s = Stream()
    s.accept(7, 1)
    s.read(7, cmd("SUBSCRIBE", "a", "b"))
    s.write(7, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
    for _ in range(3):
        s.write(7, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n")
    s.write(7, b">3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nyo\r\n")
    s.read(7, cmd("PING"))
    s.write(7, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    got, st, *_ = run(s)
    assert [r.command for r in got] == ["SUBSCRIBE", "PING"]
    assert st.stats.pushes == 4 and st.stats.unpaired_replies == 0


def test_io_threads_read_and_write_on_other_threads():
    s = Stream()
    s.accept(7, 1)
    s.read(7, cmd("GET", "k"), tid=1001)
    s.write(7, bulk(b"v"), tid=1002)
    (r,), *_ = run(s)
    assert (r.thread, r.reply_thread) == (1001, 1002)
    assert r.exec_ns is None and r.exec_source == "inferred"


def test_uprobe_exec_is_exact():
    s = Stream()
    s.accept(7, 1)
    s.read(7, cmd("GET", "a") + cmd("GET", "b"))
    s.exec_(100)
    s.exec_(300)
    s.write(7, bulk(b"1") + bulk(b"2"))
    got, *_ = run(s, uprobe_exec=True)
    assert [r.exec_ns for r in got] == [100_000, 300_000]
    assert all(r.exec_source == "uprobe" for r in got)


def test_error_reply_does_not_shift_pairing():
    s = Stream()
    s.accept(7, 1)
    s.read(7, cmd("NOSUCH") + cmd("GET", "a") + cmd("HGET", "str", "f") + cmd("GET", "b"))
    s.write(7, b"-ERR unknown command 'NOSUCH'\r\n$1\r\n1\r\n"
               b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n$-1\r\n")
    got, *_ = run(s)
    assert [(r.command, r.reply_type, r.reply_error) for r in got] == [
        ("NOSUCH", "error", "ERR"), ("GET", "ok", None), ("HGET", "error", "WRONGTYPE"), ("GET", "nil", None)]


def test_moved_reply_is_typed():
    s = Stream()
    s.accept(7, 1)
    s.read(7, cmd("GET", "foo"))
    s.write(7, b"-MOVED 12182 127.0.0.1:7002\r\n")
    (r,), *_ = run(s)
    assert r.reply_type == "moved" and r.reply_error == "MOVED"


def test_close_with_unanswered_request_and_connection_facts():
    s = Stream()
    s.accept(7, 1, established_us_before=300)
    s.read(7, cmd("GET", "a"))
    s.read(7, b"", total=0)
    s.close(7)
    got, st, _, _, conns = run(s)
    assert len(got) == 1 and got[0].reply_type == "none" and got[0].latency_ns is None
    assert st.stats.unanswered == 1 and st.stats.accepted == 1 and st.stats.closed == 1
    assert conns[0].closed_by == "client" and conns[0].accept_queue_ns >= 300_000


def test_aof_writes_and_fsyncs_are_file_syncs():
    s = Stream()
    s.aof_fd(9)
    s.accept(7, 1)
    s.read(7, cmd("SET", "a", "1"))
    s.write(9, cmd("SET", "a", "1"))
    s.write(7, b"+OK\r\n")
    s.fsync(9, 2000, tid=1003)
    s.fsync(9, 800)
    got, st, syncs, *_ = run(s)
    assert [r.command for r in got] == ["SET"]
    assert [(x.op, x.main_thread) for x in syncs] == [("aof-write", True), ("fdatasync", False), ("fdatasync", True)]
    assert syncs[1].duration_ns == 2_000_000


def test_busy_spans_pass_through():
    s = Stream()
    s.loop(0, 120_000)
    _, _, _, busy, _ = run(s)
    assert busy[0].duration_ns == 120_000_000


def test_auth_password_never_reaches_a_request():
    s = Stream()
    s.accept(7, 1)
    s.read(7, cmd("AUTH", "default", "s3cret-pass"))
    s.write(7, b"+OK\r\n")
    (r,), *_ = run(s)
    assert r.command == "AUTH" and r.key is None
    assert "s3cret" not in repr(r.to_json(__import__("tracer.stitch.model", fromlist=["Clock"]).Clock(0)))


def test_garbage_then_valid_commands_keep_pairing():
    s = Stream()
    s.accept(7, 1)
    s.read(7, b"\x00\xff\xfegarbage-without-newline")
    s.read(7, b"\r\n" + cmd("GET", "x"))
    s.write(7, b"-ERR unknown command\r\n$1\r\n1\r\n")
    got, st, *_ = run(s)
    assert got[-1].command == "GET" and got[-1].reply_type == "ok" and got[-1].reply_bytes == 7


def test_connection_older_than_trace_is_followed():
    s = Stream()
    s.read(5, cmd("GET", "old"))
    s.write(5, bulk(b"v"))
    (r,), *_ = run(s)
    assert r.key == "old" and r.client is None and r.reply_type == "ok"


def test_reply_larger_than_capture_does_not_block_later_replies():
    # HSCAN-like reply: an array of many small elements beyond the 4 KiB capture
    elements = [bulk(b"field%05d" % i) for i in range(2000)]
    reply = b"*2\r\n$1\r\n0\r\n*%d\r\n" % len(elements) + b"".join(elements)
    s = Stream(capture=4096)
    s.accept(7, 1)
    s.read(7, cmd("HSCAN", "h", "0", "COUNT", "2000"))
    for off in range(0, len(reply), 16384):
        s.write(7, reply[off:off + 16384])
    s.read(7, cmd("GET", "after"))
    s.write(7, bulk(b"ok"))
    got, st, *_ = run(s)
    assert [r.command for r in got] == ["HSCAN", "GET"]
    hscan, get = got
    assert hscan.reply_bytes == len(reply) and hscan.reply_end_ts > hscan.reply_start_ts
    assert get.reply_type == "ok" and get.reply_bytes == len(bulk(b"ok"))
    assert st.stats.unanswered == 0


def test_outgoing_link_recognised_as_master_link_from_later_traffic():
    from tracer.kernel import events

    s = Stream()
    info = events.Event(kind=events.FDINFO, tgid=s.pid, tid=s.pid, fd=9, ret=events.FD_CLIENT,
                        payload=b"out:41000", ts_enter=s.t, ts_exit=s.t)
    s.out.append(info)
    s.read(9, b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n")  # the stream first: not yet telling
    s.write(9, cmd("REPLCONF", "ACK", "1234"))
    got, st, *_ = run(s)
    assert got == []  # applied commands are not client requests
    (link,) = st.links
    assert link.kind == "master-link" and link.bytes_in > 0 and link.writes == 1


def test_replies_larger_than_the_capture_do_not_add_up_across_requests():
    """An array reply whose headers fall in uncaptured bytes ends when the client sends its next
    request (resync). The bytes of that reply must not carry over to the next ones: before the fix
    they summed over the connection, and the last request was reported 'partial' with them all."""
    s = Stream(capture=4096)
    s.accept(10, 50000)
    reply = b"*600\r\n" + bulk(b"xxx") * 600          # 5,406 bytes, LRANGE mylist 0 599
    for _ in range(20):
        s.wake()
        s.read(10, cmd("LRANGE", "mylist", 0, 599), arrival_us_before=5)
        s.write(10, reply)
    s.close(10)
    got, *_ = run(s)
    assert len(got) == 20
    assert max(r.reply_bytes for r in got) <= len(reply)
    assert all(r.reply_type != "partial" for r in got[:-1])
