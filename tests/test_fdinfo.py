"""Classifying a target's fds from /proc (a fake /proc tree: no root needed)."""
from __future__ import annotations

import os

from tracer.kernel import events
from tracer.kernel.fdinfo import STALE, FdClassifier

PID = 4242
TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def fake_proc(tmp_path, fds: dict, tcp_lines: list[str]):
    base = tmp_path / "proc" / str(PID)
    (base / "fd").mkdir(parents=True)
    (base / "net").mkdir()
    (base / "net" / "tcp").write_text(TCP_HEADER + "".join(tcp_lines))
    (base / "net" / "tcp6").write_text(TCP_HEADER)
    for fd, target in fds.items():
        os.symlink(target, base / "fd" / str(fd))
    return str(tmp_path / "proc")


def tcp(local_port, remote_port, state, inode):
    # 127.0.0.1 is 0100007F in /proc/net/tcp
    return (f"   0: 0100007F:{local_port:04X} 0100007F:{remote_port:04X} {state} 00000000:00000000 00:00000000 "
            f"00000000     0        0 {inode} 1 0000000000000000 20 4 30 10 -1\n")


def test_kinds_at_attach(tmp_path):
    proc = fake_proc(tmp_path, {6: "socket:[100]", 7: "socket:[200]", 8: "/data/appendonly.aof.1.incr.aof",
                                9: "/proc/4242/stat", 10: "socket:[300]"},
                     [tcp(6379, 0, "0A", 100), tcp(6379, 50000, "01", 200), tcp(40000, 6380, "01", 300)])
    c = FdClassifier(proc=proc, listen_ports={PID: {6379}})
    kinds = {fd: (kind, info) for fd, kind, info in c.scan(PID)}
    assert kinds[6] == (events.FD_IGNORE, None)  # the listening socket
    kind, info = kinds[7]
    assert kind == events.FD_CLIENT and info.peer == "127.0.0.1:50000"
    assert kinds[8][0] == events.FD_AOF and kinds[8][1].ret == events.FD_AOF
    assert kinds[9] == (events.FD_IGNORE, None)
    assert kinds[10][0] == events.FD_CLIENT  # outgoing (replica link, cluster bus)


def test_accepted_socket_behind_an_unknown_record_is_stale(tmp_path):
    # Redis read /proc/self/stat on fd 7, closed it, and accept() reused 7 before we classified
    proc = fake_proc(tmp_path, {7: "socket:[200]"}, [tcp(6379, 50000, "01", 200)])
    c = FdClassifier(proc=proc, listen_ports={PID: {6379}})
    assert c.classify(PID, 7) == (STALE, None)
    assert c.classify(PID, 7, at_attach=True)[0] == events.FD_CLIENT


def test_closed_fd_is_ignored(tmp_path):
    proc = fake_proc(tmp_path, {}, [])
    assert FdClassifier(proc=proc).classify(PID, 12) == (events.FD_IGNORE, None)


def test_each_fd_reported_once_until_forgotten(tmp_path):
    proc = fake_proc(tmp_path, {8: "/data/appendonly.aof"}, [])
    c = FdClassifier(proc=proc)
    assert c.classify(PID, 8)[1] is not None
    assert c.classify(PID, 8) == (events.FD_AOF, None)
    c.forget(PID, 8)
    assert c.classify(PID, 8)[1] is not None
