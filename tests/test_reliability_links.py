"""Values and secrets on the connections that are not clients never reach a recording unmasked.

A real master with two replicas (one traced, one started after the tracers attached, so its full
resync's RDB goes through the traced master), a MONITOR client, an AOF, and a MIGRATE with AUTH to a
third server: `record` in the full path, in the engine mode (the default is one of them) and with
--show-values, both instances in one recording. Every byte of the recordings (stored and
decompressed), of `report`, `report --json` and `export` is searched for the values and passwords.
The keys of the replication stream stay readable: the expiry-stall code names a key from its DEL.
"""
from __future__ import annotations

import json
import time

import pytest

from reliability_util import call, cli, connect, read_some
from tracer_proc import TracerProcess

from tracer.tracefile.recording import TraceReader

pytestmark = pytest.mark.bpf

LINK_PW = b"LinkPw-masterauth-Q4vN7"       # requirepass of master and traced replica, the masterauth
TARGET_PW = b"LinkPw-migrate-auth-R8sK2"   # requirepass of the MIGRATE target
VALUES = (b"LinkValue-before-attach-Z1xk", b"LinkValue-streamed-Y2wj", b"LinkValue-hash-field-X3vh",
          b"LinkValue-migrated-W4ug")
DEL_KEY = b"link:deleted-key-7731"
# the default mode (options.MODE) is one of the first two
MODES = {"full": ("--full",), "engine": ("--engine",), "shown": ("--full", "--show-values")}


def wait_link_up(client, deadline_s: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_s
    while client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, client.info("replication")
        time.sleep(0.1)


def auth(port: int, pw: bytes):
    s = connect(port)
    assert call(s, "AUTH", pw) == b"+OK\r\n"
    return s


def records_of(path) -> bytes:
    with TraceReader(path) as r:
        return b"".join(r.records())


def test_link_monitor_aof_and_migrate_bytes_are_masked(redis_factory, tmp_path):
    pw = LINK_PW.decode()
    target = redis_factory(requirepass=TARGET_PW.decode())
    master = redis_factory(requirepass=pw, masterauth=pw, appendonly="yes")
    replica = redis_factory(replicaof=f"127.0.0.1 {master.port}", masterauth=pw, requirepass=pw)
    m = auth(master.port, LINK_PW)
    assert call(m, "SET", "link:before", VALUES[0]) == b"+OK\r\n"
    r = replica.client(password=pw, socket_timeout=10)
    wait_link_up(r)
    ports = f"{master.port},{replica.port}"
    files = {name: tmp_path / f"{name}.rtrace" for name in MODES}
    live_json = tmp_path / "live.json"
    tracers = {name: TracerProcess("record", "--port", ports, "-o", str(files[name]), *args,
                                   *(("--json-out", str(live_json)) if name == "full" else ()),
                                   env={"REDISCLI_AUTH": pw})
               for name, args in MODES.items()}
    monitor = auth(master.port, LINK_PW)
    monitor.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
    # +OK, maybe followed by what the tracers' INFO samplers already sent (MONITOR streams every client)
    assert read_some(monitor).startswith(b"+OK\r\n")
    # the traced replica reconnects: its handshake sends AUTH masterauth on its link to the master
    assert r.execute_command("REPLICAOF", "NO", "ONE")
    assert r.execute_command("REPLICAOF", "127.0.0.1", str(master.port))
    wait_link_up(r)
    time.sleep(1.2)     # a replica link older than the trace is told by its REPLCONF ACK, every second
    # a second replica after attach: the traced master writes it a full resync (an RDB with values)
    late = redis_factory(replicaof=f"127.0.0.1 {master.port}", masterauth=pw)
    wait_link_up(late.client(socket_timeout=10))
    assert call(m, "SET", "link:streamed", VALUES[1]) == b"+OK\r\n"
    assert call(m, "HSET", "link:hash", "field", VALUES[2]) == b":1\r\n"
    assert call(m, "SET", DEL_KEY, "x") == b"+OK\r\n"
    assert call(m, "DEL", DEL_KEY) == b":1\r\n"
    assert call(m, "SET", "link:migrated", VALUES[3]) == b"+OK\r\n"
    assert call(m, "MIGRATE", "127.0.0.1", str(target.port), "link:migrated", "0", "5000", "COPY",
                "AUTH", TARGET_PW) == b"+OK\r\n"
    deadline = time.monotonic() + 10
    while r.get("link:migrated") is None:       # the traced replica applied the stream
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert VALUES[1] in read_some(monitor)      # MONITOR really carried the values
    outputs: dict[str, bytes] = {}
    for name, t in tracers.items():
        rc, out = t.stop()
        assert rc == 0, (name, t.stderr_text())
        outputs[f"{name}.stdout"] = out.encode() + t.stderr_text().encode()
    for name, path in files.items():
        for args in (["report", str(path)], ["report", str(path), "--json"],
                     ["export", str(path), "-o", str(path) + ".chrome.json"]):
            proc = cli(*args)
            assert proc.returncode == 0, proc.stderr
            outputs[" ".join(args)] = proc.stdout + proc.stderr
        outputs[f"{name}.records"] = records_of(path)
    for p in tmp_path.iterdir():
        if p.is_file():
            outputs[p.name] = p.read_bytes()

    leaks = [(secret, name) for name, data in outputs.items() for secret in (LINK_PW, TARGET_PW)
             if secret in data]
    leaks += [(value, name) for name, data in outputs.items() for value in VALUES
              if value in data and name not in ("shown.records", "shown.rtrace")]
    assert not leaks
    # the test looked at the link traffic: the replica link and its stream are in the recordings,
    # with the DEL's key readable (the expiry-stall code names the key from it)
    del_frame = b"*2\r\n$3\r\nDEL\r\n$%d\r\n%s\r\n" % (len(DEL_KEY), DEL_KEY)
    for name in ("full", "shown"):
        records = outputs[f"{name}.records"]
        assert b"PSYNC" in records and b"REPLCONF" in records and b"FULLRESYNC" in records, name
        assert records.count(del_frame) >= 2, name     # the client's DEL, and the streams' to the replicas
    # the replay of the masked bytes finds what the live analysis found: the same links, requests, keys
    replayed = json.loads(outputs[f"report {files['full']} --json"])
    assert json.loads(live_json.read_text()) == replayed
    kinds = {link["kind"] for inst in replayed["instances"] for link in inst["links"]}
    assert {"replica", "master-link"} <= kinds, kinds
    # --show-values keeps a client's values (the SET the master read, the MONITOR line), never the
    # link's: the RDB (the only place of the value set before attaching) and the streams stay masked
    assert VALUES[0] not in outputs["shown.records"]
    assert 1 <= outputs["shown.records"].count(VALUES[1]) <= 2
