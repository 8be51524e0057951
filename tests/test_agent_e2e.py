"""`redis-tracer agent` with real parts: a real redis-server under a known load, Debian's Prometheus
server scraping the agent, an OTLP/HTTP receiver decoding its spans, a Redis restart, and the agent
running as a non-root user with only the capabilities the systemd unit grants."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent_util import bigkey_del_with_victim, scrape, send, start_agent, total, wait_for
from conftest import bpf_required
from test_diagnosis_e2e import build_hash
from tracer.sandbox.redis_server import free_port
from test_deploy import unit_value
from tracer_proc import REPO, TracerProcess, json_lines

pytestmark = pytest.mark.bpf

AGENT_CAPS = ("bpf", "perfmon", "sys_ptrace", "dac_read_search")     # the unit's AmbientCapabilities
BIG_FIELDS = 300_000            # DEL of a hash this big blocks Redis for ~0.1-0.5 s: above --stall-ms 20


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if bpf_required():
            pytest.fail(f"{tool} is not installed: scripts/test-deps installs it")
        pytest.skip(f"{tool} is not installed (scripts/test-deps installs it)")
    return path


def with_big_hash(redis_factory):
    server = redis_factory()
    c = server.client(socket_timeout=60)
    build_hash(c, "big:hash", BIG_FIELDS)     # before the agent attaches: not in its counts
    c.close()
    return server


# -- Prometheus ------------------------------------------------------------------------------------------
class Prometheus:
    def __init__(self, binary: str, workdir, target_port: int):
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          "scrape_configs:\n  - job_name: redis-tracer\n    honor_labels: true\n"
                          f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n")
        self.log = open(workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, True, 30, "prometheus ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scalar(self, expr: str):
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


def test_prometheus_counts_every_request_and_sees_the_bigkey_stall(redis_factory, tmp_path):
    binary = need("prometheus")
    server = with_big_hash(redis_factory)
    agent, metrics_port = start_agent(server.port, "--stall-ms", "20")
    prometheus = Prometheus(binary, tmp_path, metrics_port)
    try:
        sent = send(server.port, ("PING",), 1000)
        sent += send(server.port, ("INCR", "n"), 2000, batch=50)       # pipelined: counted per command
        sent += bigkey_del_with_victim(server.port)
        wait_for(lambda: prometheus.scalar("sum(redis_tracer_requests_total)"), float(sent), 20,
                 "Prometheus's sum(redis_tracer_requests_total)")
        classes = wait_for(lambda: "bigkey" in {r["metric"]["class"] for r in prometheus.query(
            "redis_tracer_stalls_total")}, True, 15, "a bigkey stall class in Prometheus")
        assert classes
        assert prometheus.scalar('sum(redis_tracer_requests_total{command="incr"})') == 2000
        assert prometheus.scalar("sum(redis_tracer_request_duration_seconds_count)") >= 2000
        assert prometheus.scalar("sum(redis_tracer_lost_events_total)") == 0
        assert prometheus.query('redis_tracer_phase_seconds_count{phase="socket_queue"}')
    finally:
        prometheus.stop()
        rc, out = agent.stop(signal.SIGTERM)
    assert rc == 0, agent.stderr_text()
    stalls = [line for line in json_lines(out) if line["event"] == "stall"]
    assert any(s["class"] == "bigkey" and s["culprit"]["command"] == "DEL" for s in stalls), stalls


# -- OTLP ------------------------------------------------------------------------------------------------
class OtlpReceiver:
    """OTLP/HTTP traces endpoint on loopback, decoding each export with opentelemetry-proto."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                              ExportTraceServiceResponse)
        self.spans = []
        self.paths = []
        self.resource = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for rs in request.resource_spans:
                    receiver.resource.update(attributes(rs.resource))
                    for ss in rs.scope_spans:
                        receiver.spans.extend(ss.spans)
                receiver.paths.append(self.path)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def attributes(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


def test_otlp_exports_the_stall_with_its_culprit_and_linked_victims(redis_factory):
    server = with_big_hash(redis_factory)
    receiver = OtlpReceiver()
    agent, _ = start_agent(server.port, "--stall-ms", "20", "--otlp-endpoint", f"http://127.0.0.1:{receiver.port}",
                           "--host-label", "node-7")
    try:
        bigkey_del_with_victim(server.port)
        time.sleep(3.5)        # the stall stays open 2 s for late victims, then is exported
    finally:
        rc, out = agent.stop(signal.SIGTERM)       # flushes the span queue
        receiver.close()
    assert rc == 0, agent.stderr_text()
    assert set(receiver.paths) == {"/v1/traces"}
    stalls = [s for s in receiver.spans if s.name == "stall bigkey"]
    assert stalls, [s.name for s in receiver.spans]
    stall = stalls[0]
    a = attributes(stall)
    assert a["db.system.name"] == "redis" and a["server.port"] == server.port and a["server.address"] == "node-7"
    assert {"service.name": "redis-tracer", "host.name": "node-7"}.items() <= receiver.resource.items()
    assert a["db.operation.name"] == "DEL" and a["redis_tracer.stall.class"] == "bigkey"
    assert a["redis_tracer.stall.duration_ms"] >= 20 and stall.end_time_unix_nano > stall.start_time_unix_nano
    culprits = [s for s in receiver.spans if s.parent_span_id == stall.span_id]
    assert [attributes(s)["db.operation.name"] for s in culprits] == ["DEL"]
    assert all(s.trace_id == stall.trace_id for s in culprits)
    victims = [s for s in receiver.spans if any(link.span_id == stall.span_id and link.trace_id == stall.trace_id
                                               for link in s.links)]
    assert victims, "no span links to the stall"
    for v in victims:
        va = attributes(v)
        assert va["db.operation.name"] == "GET" and va["redis_tracer.role"] == "victim"
        assert va["db.system.name"] == "redis" and va["server.port"] == server.port
        assert v.trace_id != stall.trace_id        # a victim is its own request, linked, not a child
    assert not any("key" in k or "client" in k for s in receiver.spans for k in attributes(s))
    # the same stall as one JSON line on stdout
    lines = [line for line in json_lines(out) if line["event"] == "stall" and line["class"] == "bigkey"]
    assert lines and lines[0]["culprit"] == {"command": "DEL", "key": "big:hash",
                                             "client": lines[0]["culprit"]["client"]}
    assert lines[0]["victims"] >= 1 and lines[0]["instance"] == f"node-7:{server.port}"


def test_a_collector_that_is_down_does_not_hold_the_agent_at_sigterm(redis_server):
    """With the OTLP collector unreachable, the exporter retried at shutdown for 33 s, past the unit's
    TimeoutStopSec=30 (then SIGKILL); the flush is now bounded (otlp.CLOSE_TIMEOUT_S)."""
    agent, metrics_port = start_agent(redis_server.port, "--min-ms", "0.01",
                                      "--otlp-endpoint", f"http://127.0.0.1:{free_port()}")
    send(redis_server.port, ("PING",), 3000)
    wait_for(lambda: total(scrape(metrics_port)), 3000.0, 15, "requests counted")
    time.sleep(4)           # held 3 s for stalls, then queued for export to a collector that is not there
    t0 = time.monotonic()
    rc, _ = agent.stop(signal.SIGTERM, timeout=25)
    assert rc == 0, agent.stderr_text()[-2000:]
    assert time.monotonic() - t0 < 15, agent.stderr_text()[-2000:]


# -- restarts --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("by", ["--port", "--pid"])
def test_agent_reattaches_after_a_redis_restart_and_keeps_counting(redis_factory, by):
    """--port follows the port; --pid follows the pid, then the redis-server back on its port."""
    server = redis_factory()
    port, first_pid = server.port, server.pid
    metrics_port = free_port()
    agent = TracerProcess("agent", by, str(port if by == "--port" else first_pid),
                          "--listen", f"127.0.0.1:{metrics_port}")
    try:
        send(port, ("PING",), 300)
        wait_for(lambda: total(scrape(metrics_port)), 300.0, 15, "requests before the restart")
        server.stop()
        again = redis_factory(port=port)
        assert again.pid != first_pid
        wait_for(lambda: any(f"tracing pid {again.pid} " in line for line in agent.stderr_lines), True, 45,
                 "the agent re-attaching")
        send(port, ("PING",), 200)
        wait_for(lambda: total(scrape(metrics_port)), 500.0, 15, "requests across the restart")
        assert agent.proc.poll() is None        # it never stopped by itself
    finally:
        rc, _ = agent.stop(signal.SIGTERM)
    assert rc == 0, agent.stderr_text()


def instance_total(samples: dict, port: int) -> float:
    return sum(v for (n, labels), v in samples.items()
               if n == "redis_tracer_requests_total" and dict(labels)["instance"].endswith(f":{port}"))


def test_agent_with_all_follows_a_new_redis_server_and_keeps_the_first_ones_counts(redis_factory):
    """The next session compiles while the running one counts: requests to the followed server during
    the compile are counted, none twice, and the agent sends the followed server nothing."""
    first = redis_factory()
    metrics_port = free_port()
    agent = TracerProcess("agent", "--all", "--listen", f"127.0.0.1:{metrics_port}")
    try:
        send(first.port, ("PING",), 200)
        wait_for(lambda: instance_total(scrape(metrics_port), first.port), 200.0, 15, "the first server's count")
        second = redis_factory()
        wait_for(lambda: any("compiling the probes for" in line and str(second.pid) in line
                             for line in agent.stderr_lines), True, 15, "the agent preparing the next session")
        send(first.port, ("PING",), 150)        # while the next session compiles: the running one counts
        wait_for(lambda: instance_total(scrape(metrics_port), first.port), 350.0, 5, "counted during the compile")
        wait_for(lambda: any(f"tracing pid {second.pid} " in line for line in agent.stderr_lines), True, 45,
                 "the agent following the new redis-server")
        send(second.port, ("INCR", "n"), 300, batch=30)
        send(first.port, ("PING",), 100)
        wait_for(lambda: instance_total(scrape(metrics_port), second.port), 300.0, 15, "the new server's count")
        wait_for(lambda: instance_total(scrape(metrics_port), first.port), 450.0, 15, "the first server's count")
        commands = {dict(labels)["command"] for (n, labels), v in scrape(metrics_port).items()
                    if n == "redis_tracer_requests_total" and dict(labels)["instance"].endswith(f":{first.port}")}
        assert commands == {"ping"}, commands       # no INFO/CONFIG/COMMAND of the agent's own
    finally:
        rc, _ = agent.stop(signal.SIGTERM)
    assert rc == 0, agent.stderr_text()


# -- the systemd unit's capabilities ---------------------------------------------------------------------
def test_the_non_root_capability_path_counts_exactly(redis_factory):
    """As nobody with only the unit's ambient capabilities (setpriv), the agent attaches and counts."""
    setpriv = need("setpriv")
    listed = {c.lower().removeprefix("cap_") for c in unit_value("AmbientCapabilities").split()}
    assert listed == set(AGENT_CAPS)
    caps = ",".join(f"+{c}" for c in AGENT_CAPS)
    prefix = (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps=-all,{caps}",
              f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{caps}")
    server = redis_factory(appendonly="yes", appendfsync="always")     # an fdatasync per write: fsync seconds
    agent, metrics_port = start_agent(server.port, prefix=prefix,
                                      env={"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        with open(f"/proc/{agent.proc.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        assert status["Uid"].split()[0] == "65534"
        assert int(status["CapEff"], 16) == sum(1 << n for n in (39, 38, 19, 2))   # BPF PERFMON SYS_PTRACE DAC_READ_SEARCH
        send(server.port, ("PING",), 400)
        send(server.port, ("INCR", "n"), 100, batch=10)
        wait_for(lambda: total(scrape(metrics_port)), 500.0, 15, "requests counted as nobody")
        # the 10 batches of INCRs: 10 AOF appends, each synced (FSYNC records: fed at the next drain)
        wait_for(lambda: total(scrape(metrics_port), "redis_tracer_fsync_seconds_count"), 10.0, 10,
                 "fsyncs counted as nobody")
    finally:
        rc, _ = agent.stop(signal.SIGTERM)
    assert rc == 0, agent.stderr_text()


def test_without_sys_ptrace_the_agent_says_which_capability_it_lacks(redis_server):
    """A root-owned Redis's /proc/<pid>/fd is closed to a user without CAP_SYS_PTRACE: the agent keeps
    waiting (it never stops by itself) and says why it cannot see the sockets."""
    caps = "+bpf,+perfmon,+dac_read_search"
    proc = subprocess.Popen([need("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups",
                             f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{caps}",
                             sys.executable, "-m", "tracer", "agent", "--port", str(redis_server.port),
                             "--listen", f"127.0.0.1:{free_port()}"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, "HOME": "/tmp"})
    try:
        line = ""
        deadline = time.monotonic() + 20
        while "waiting for" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "cannot read /proc/<pid>/fd of" in line and "CAP_SYS_PTRACE" in line, line
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("args, message", [
    ((), "agent needs its targets: --port, --pid or --all"),
    (("--all", "--listen", "nowhere"), "--listen 'nowhere' is not ADDR:PORT"),
    (("--all", "--interval", "0"), "--interval must be between 0.05 and 3600 seconds, not 0"),
])
def test_agent_bad_input_is_one_line(args, message):
    proc = subprocess.run([sys.executable, "-m", "tracer", "agent", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr      # a usage error
    assert proc.stderr.strip().splitlines() == [f"redis-tracer: {message}" + proc.stderr.split(message, 1)[1].split(
        "\n")[0]], proc.stderr


def test_agent_refuses_a_busy_listen_port_in_one_line(redis_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "tracer", "agent", "--port", str(redis_server.port), "--listen",
                               f"127.0.0.1:{port}"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_without_dac_read_search_the_agent_fails_in_one_line_before_serving(redis_server):
    """bcc reads each tracepoint's format from tracefs (mode 0700): without CAP_DAC_READ_SEARCH the
    compile fails with pages of clang errors, retried forever; the agent now says why and exits."""
    caps = "+bpf,+perfmon,+sys_ptrace"
    proc = subprocess.run([need("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups",
                           f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{caps}",
                           sys.executable, "-m", "tracer", "agent", "--port", str(redis_server.port),
                           "--listen", f"127.0.0.1:{free_port()}"],
                          cwd=REPO, capture_output=True, text=True, timeout=30, env={**os.environ, "HOME": "/tmp"})
    assert proc.returncode == 77, proc.stderr[-2000:]
    assert len(proc.stderr.splitlines()) == 1 and "CAP_DAC_READ_SEARCH" in proc.stderr, proc.stderr[-2000:]
    assert "serving /metrics" not in proc.stderr


def test_agent_waits_for_its_redis_and_stops_cleanly_on_sigint():
    """Nothing on the port yet: the agent serves /metrics, says what it waits for, never exits by itself;
    SIGINT ends it with exit 0."""
    port, metrics_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "agent", "--port", str(port),
                             "--listen", f"127.0.0.1:{metrics_port}"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stderr.readline() for _ in range(2)]
        assert f"waiting for a redis-server on port {port}" in lines[1], lines
        time.sleep(1.5)
        assert proc.poll() is None
        assert scrape(metrics_port)[("redis_tracer_lost_events_total", frozenset())] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "stopped (SIGINT)" in err, err
