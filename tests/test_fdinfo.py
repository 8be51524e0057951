"""Classifying a target's fds from /proc (a fake /proc tree: no root needed)."""
from __future__ import annotations

import os

from tracer import events, fdinfo
from tracer.fdinfo import FdClassifier, SocketTables

PID = 4242
TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
UNIX_HEADER = "Num       RefCount Protocol Flags    Type St Inode Path\n"


def fake_proc(tmp_path, fds: dict, tcp_lines: list[str], unix_lines: list[str] = ()):
    base = tmp_path / "proc" / str(PID)
    (base / "fd").mkdir(parents=True)
    (base / "net").mkdir()
    (base / "net" / "tcp").write_text(TCP_HEADER + "".join(tcp_lines))
    (base / "net" / "tcp6").write_text(TCP_HEADER)
    (base / "net" / "unix").write_text(UNIX_HEADER + "".join(unix_lines))
    for fd, target in fds.items():
        os.symlink(target, base / "fd" / str(fd))
    return str(tmp_path / "proc")


def tcp(local_port, remote_port, state, inode):
    # 127.0.0.1 is 0100007F in /proc/net/tcp
    return (f"   0: 0100007F:{local_port:04X} 0100007F:{remote_port:04X} {state} 00000000:00000000 00:00000000 "
            f"00000000     0        0 {inode} 1 0000000000000000 20 4 30 10 -1\n")


def unix(inode, state, type_="0001", flags="00000000", path=""):
    return f"0000000000000000: 00000002 00000000 {flags} {type_} {state} {inode} {path}\n"


def test_kinds_at_attach(tmp_path):
    proc = fake_proc(tmp_path, {6: "socket:[100]", 7: "socket:[200]", 8: "/data/appendonly.aof.1.incr.aof",
                                9: "/proc/4242/stat", 10: "socket:[300]", 11: "socket:[400]",
                                12: "socket:[500]", 13: "socket:[600]", 14: "pipe:[700]"},
                     [tcp(6379, 0, "0A", 100), tcp(6379, 50000, "01", 200), tcp(40000, 6380, "01", 300)],
                     [unix(400, "03"), unix(500, "01", flags="00010000", path="/run/redis.sock")])
    c = FdClassifier(proc=proc, listen_ports={PID: {6379}})
    kinds = {fd: (kind, info) for fd, kind, info in c.scan(PID)}
    assert kinds[6] == (events.FD_IGNORE, None)  # the listening socket
    kind, info = kinds[7]
    assert kind == events.FD_CLIENT and info.peer == "127.0.0.1:50000" and info.payload == b"in:6379"
    assert kinds[8][0] == events.FD_AOF and kinds[8][1].ret == events.FD_AOF
    assert kinds[9] == (events.FD_IGNORE, None)
    assert kinds[10][0] == events.FD_CLIENT and kinds[10][1].payload == b"out:40000"  # replica link, cluster bus
    assert kinds[11][0] == events.FD_CLIENT and kinds[11][1].payload == b"unix"     # a unix-socket client
    assert kinds[12] == (events.FD_IGNORE, None)  # the listening unix socket
    assert kinds[13] == (events.FD_IGNORE, None)  # a socket in no table (UDP, netlink, gone): never a client
    assert kinds[14] == (events.FD_IGNORE, None)


def test_scan_reads_the_socket_tables_once_not_once_per_fd(tmp_path, monkeypatch):
    # Issue 19: /proc/<pid>/net/tcp re-read for every fd made attaching to N connections O(N^2)
    # (122 s for 2,500 connections). 300 connections here; the tables must be read once.
    n = 300
    proc = fake_proc(tmp_path, {10 + i: f"socket:[{1000 + i}]" for i in range(n)},
                     [tcp(6379, 30000 + i, "01", 1000 + i) for i in range(n)])
    table_reads = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        if "/net/" in str(path):
            table_reads.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(fdinfo, "open", counting_open, raising=False)
    scanned = FdClassifier(proc=proc, listen_ports={PID: {6379}}).scan(PID)
    assert [kind for _, kind, _ in scanned] == [events.FD_CLIENT] * n
    assert {info.peer_port for _, _, info in scanned} == set(range(30000, 30000 + n))
    assert len(table_reads) <= 3, f"{len(table_reads)} reads of the socket tables for {n} fds"


def test_scan_reports_progress(tmp_path):
    n = fdinfo.SCAN_TICK_FDS * 2 + 5
    proc = fake_proc(tmp_path, {10 + i: "/dev/null" for i in range(n)}, [])
    ticks = []
    assert len(FdClassifier(proc=proc).scan(PID, tick=lambda done, total: ticks.append((done, total)))) == n
    assert ticks == [(fdinfo.SCAN_TICK_FDS, n), (fdinfo.SCAN_TICK_FDS * 2, n)]


def test_closed_fd_has_no_link(tmp_path):
    proc = fake_proc(tmp_path, {}, [])
    assert FdClassifier(proc=proc).link(PID, 12) is None


def test_each_fd_reported_once_until_forgotten_or_replaced(tmp_path):
    proc = fake_proc(tmp_path, {8: "/data/appendonly.aof", 9: "socket:[200]"}, [tcp(6379, 50000, "01", 200)])
    c = FdClassifier(proc=proc, listen_ports={PID: {6379}})
    link = c.link(PID, 8)
    assert not c.reported(PID, 8, link)
    assert c.classify(PID, 8, link, SocketTables(proc))[1] is not None
    assert c.reported(PID, 8, link) and not c.reported(PID, 8, "/data/other")
    assert c.classify(PID, 8, link, SocketTables(proc)) == (events.FD_AOF, None)
    c.forget(PID, 8)
    assert c.classify(PID, 8, link, SocketTables(proc))[1] is not None
    # the same number behind another link (closed and reused): classified anew
    assert c.classify(PID, 8, "socket:[200]", SocketTables(proc))[0] == events.FD_CLIENT
