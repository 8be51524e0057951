"""A redis-server in its own network namespace (the way containers run it), traced for real.

The namespaces are made by the test (`ip netns add`, loopback only) and removed afterwards. Before
the fix the target's listening ports were read from the tracer's own /proc/net/tcp: a container's
redis-server had none, so no request had an arrival time (socket_queue null, arrival_known false).
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.netns_util import netns, start_proxy  # noqa: F401 - the fixture
from tests.tracer_proc import REPO, TracerProcess, json_lines
from tracer.sandbox.redis_server import free_port

SETS = 300


def benchmark_in(ns, port: int, n: int = SETS) -> None:
    """n SETs from redis-benchmark inside the namespace (it also sends two CONFIG GETs first)."""
    ns.run("redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(n), "-c", "3", "-t", "set", "-q")


def assert_sets_with_arrival(out: str, n: int = SETS) -> list[dict]:
    sets = [r for r in json_lines(out) if r["command"] == "SET"]
    assert len(sets) == n
    unknown = [r for r in sets if not r["arrival_known"] or r["phases_us"]["socket_queue"] is None]
    assert not unknown, unknown[:3]
    return sets


@pytest.mark.bpf
def test_pid_in_a_namespace_with_the_same_port_as_a_host_server(netns, redis_factory, tmp_path):
    host = redis_factory()
    ns = netns("pid")
    inside = ns.redis_server(host.port, tmp_path)    # the same port number, in its own namespace
    tracer = TracerProcess("trace", "--pid", str(inside.pid), "--json")
    benchmark_in(ns, host.port)
    client = host.client()
    for i in range(50):             # the host's server on the same port: not traced
        client.get(f"k{i}")
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    assert_sets_with_arrival(out)
    assert {r["pid"] for r in json_lines(out)} == {inside.pid}
    assert not [r for r in json_lines(out) if r["command"] == "GET"]


@pytest.mark.bpf
def test_port_finds_the_server_in_another_namespace(netns, tmp_path):
    ns = netns("port")
    port = free_port()                  # nothing listens on it in the tracer's namespace
    inside = ns.redis_server(port, tmp_path)
    tracer = TracerProcess("trace", "--port", str(port), "--json")
    benchmark_in(ns, port)
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    assert re.search(rf"redis-server pid {inside.pid} listens on port {port} in network namespace net:\[\d+\]",
                     tracer.stderr_text())
    assert_sets_with_arrival(out)


@pytest.mark.bpf
def test_port_of_a_forwarding_proxy_traces_the_server_behind_it(netns, tmp_path):
    import redis

    ns = netns("proxy")
    inside = ns.redis_server(6379, tmp_path)
    host_port = free_port()
    proxy = start_proxy(host_port, ns, 6379)
    # an idle proxy that does not say where it forwards: one line naming --pid, no traceback
    refused = subprocess.run([sys.executable, "-m", "tracer", "trace", "--port", str(host_port), "--duration", "1"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert f"port {host_port} belongs to pid {proxy.pid}" in refused.stderr and "--pid" in refused.stderr
    assert "Traceback" not in refused.stderr
    # with a connection through it, the proxy's socket inside the namespace shows where it forwards
    client = redis.Redis(host="127.0.0.1", port=host_port, driver_info=None, protocol=2, socket_timeout=5)
    assert client.ping()
    tracer = TracerProcess("trace", "--port", str(host_port), "--json")
    # a connection made while tracing (an older one has no arrival times: its handshake was not seen)
    fresh = redis.Redis(host="127.0.0.1", port=host_port, driver_info=None, protocol=2, socket_timeout=5)
    for i in range(150):
        fresh.set(f"key:{i}", "v")
    fresh.close()
    rc, out = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    assert re.search(rf"port {host_port} is \S+ \(pid {proxy.pid}\), a proxy for redis-server pid {inside.pid} "
                     r"in network namespace net:\[\d+\]; tracing that", tracer.stderr_text())
    assert_sets_with_arrival(out, 150)
    client.close()
