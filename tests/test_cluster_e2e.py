"""Several instances at once: a real 3-master cluster and a master with a replica, on loopback."""
from __future__ import annotations

import subprocess
import time

import pytest
import redis

from tracer_proc import TracerProcess, report_of

from tracer.sandbox.redis_server import RedisServer, port_is_free
from tracer.tracefile.recording import TraceReader

pytestmark = pytest.mark.bpf
BUS_VALUE = b"BusValue-published-message-P5tL"


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def cluster_port(taken) -> int:
    """A port whose cluster bus port (+10000) is free too; Redis refuses ports above 55535."""
    import random

    for _ in range(500):
        port = random.randint(20000, 45000)
        if port not in taken and port_is_free(port) and port_is_free(port + 10000):
            taken.add(port)
            return port
    raise AssertionError("no free port pair for a cluster node")


@pytest.fixture
def cluster(tmp_path):
    """Three masters with every slot assigned, on free loopback ports."""
    nodes = []
    try:
        taken = set()
        for i in range(3):
            nodes.append(RedisServer(port=cluster_port(taken), dir=str(tmp_path / f"node{i}"), cluster_enabled="yes",
                                     cluster_config_file="nodes.conf", cluster_node_timeout=5000).start())
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        wait_for(lambda: all(n.client().cluster("info")["cluster_state"] == "ok" for n in nodes),
                 what="cluster_state:ok")
        yield nodes
    finally:
        for n in nodes:
            n.stop()


@pytest.fixture
def master_replica(tmp_path):
    master = RedisServer(dir=str(tmp_path / "master")).start()
    replica = RedisServer(dir=str(tmp_path / "replica")).start()
    try:
        yield master, replica
    finally:
        replica.stop()
        master.stop()


def owner_port(nodes, key) -> int:
    slot = nodes[0].client().cluster("keyslot", key)
    for start, end, master, *_ in nodes[0].client().execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(master[1])
    raise AssertionError(f"no owner for slot {slot}")


def test_cluster_requests_redirects_and_gossip(cluster, tmp_path):
    ports = [n.port for n in cluster]
    trace = tmp_path / "cluster.rtrace"
    tracer = TracerProcess("record", "--port", ",".join(map(str, ports)), "-o", str(trace))
    rc_client = redis.RedisCluster(host="127.0.0.1", port=ports[0])
    keys = [f"user:{i}" for i in range(60)]
    for k in keys:
        rc_client.set(k, "v")
    expected = {p: 0 for p in ports}
    for k in keys:
        expected[owner_port(cluster, k)] += 1
    rc_client.close()

    # a client with a wrong slot map: plain GETs to the first node, following each MOVED by hand
    wrong = redis.Redis(host="127.0.0.1", port=ports[0])
    moved = 0
    for k in keys:
        try:
            wrong.get(k)
        except redis.exceptions.MovedError as err:  # redis-py strips the "MOVED" word: "slot host:port"
            moved += 1
            target = int(str(err).split()[1].rsplit(":", 1)[1])
            redis.Redis(host="127.0.0.1", port=target).get(k)
    wrong.close()
    assert moved > 0
    # a PUBLISH travels the cluster bus to every node, its message inside a bus message
    assert redis.Redis(host="127.0.0.1", port=ports[0]).publish("bus:channel", BUS_VALUE) == 0
    time.sleep(1.5)  # cluster bus PING/PONG
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    report = report_of(trace)

    by_port = {inst["target"]["port"]: inst for inst in report["instances"]}
    assert set(by_port) == set(ports)
    for port in ports:
        assert by_port[port]["commands"]["SET"]["count"] == expected[port], port
    assert report["redirects"]["moved"] == moved
    assert report["redirects"]["joined"] == moved
    assert sum(n["moved"] for n in report["redirects"]["by_node_slot"]) == moved
    assert all(n["port"] == ports[0] for n in report["redirects"]["by_node_slot"])
    bus = [link for link in report["links"] if link["kind"] == "cluster-bus"]
    assert bus and sum(link["messages"].get("PING", 0) + link["messages"].get("PONG", 0) for link in bus) > 0
    # gossip is not counted as requests: every request decoded to a real command
    assert "?" not in report["commands"]
    # the bus message headers are recorded (the replay above counted PUBLISH), never their payloads
    assert sum(link["messages"].get("PUBLISH", 0) for link in bus) >= 1
    with TraceReader(trace) as reader:
        records = b"".join(reader.records())
    assert BUS_VALUE not in records and BUS_VALUE not in trace.read_bytes()


def test_master_replica_stream_is_not_requests(master_replica, tmp_path):
    master, replica = master_replica
    trace = tmp_path / "repl.rtrace"
    tracer = TracerProcess("record", "--port", f"{master.port},{replica.port}", "-o", str(trace))
    replica.client().replicaof("127.0.0.1", master.port)
    wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up", what="replication")
    m = master.client()
    n = 200
    for i in range(n):
        m.set(f"r:{i}", "x" * 100)
    wait_for(lambda: replica.client().dbsize() >= n, what="replica caught up")
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    report = report_of(trace)
    by_port = {inst["target"]["port"]: inst for inst in report["instances"]}
    assert by_port[master.port]["commands"]["SET"]["count"] == n
    assert "SET" not in by_port[replica.port]["commands"]  # applied from the stream, not client requests
    links = {link["kind"]: link for link in by_port[master.port]["links"]}
    stream = links["replica"]
    assert stream["bytes_out"] >= n * 100 and stream["writes"] > 0
    replica_links = {link["kind"] for link in by_port[replica.port]["links"]}
    assert "master-link" in replica_links
