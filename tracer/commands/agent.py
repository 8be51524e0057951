"""`redis-tracer agent`: the always-on engine, headless and unattended, for a fleet.

Serves Prometheus /metrics (--listen), logs each stall as one JSON line on stdout, and with
--otlp-endpoint exports stalls and slow requests as OpenTelemetry spans. Runs until SIGTERM/SIGINT;
re-attaches when a traced Redis restarts or, with --all, when a new redis-server starts.
"""
from __future__ import annotations

import dataclasses
import sys

from tracer.credentials import add_credential_args
from tracer.errors import TracerError, UsageError
from tracer.options import AGENT_LISTEN, POLL_MS, TraceOptions
from tracer.runtime import runner

NEEDS = "pip install 'redis-tracer[agent]'"

EXAMPLES = """\
  redis-tracer agent --all              # every redis-server here, new ones too
  redis-tracer agent --port 6379 --listen 127.0.0.1:9386   # /metrics there
  # stalls and slow requests as OpenTelemetry spans too:
  redis-tracer agent --port 6379 --otlp-endpoint http://127.0.0.1:4318
  redis-tracer agent --all --stall-ms 20 | jq .class   # stall JSON lines
  # a JSON line of each 10 s's own figures too, "event": "interval":
  redis-tracer agent --port 6379 --interval 10 | jq .rps"""


def add_parser(sub):
    p = sub.add_parser("agent", help="run headless for a fleet: Prometheus /metrics, OTLP spans, JSON stall logs "
                                     "(until SIGTERM)")
    p.add_argument("--pid", type=int, action="append", metavar="PID",
                   help="pid of a redis-server to follow (repeat for several); after it exits, the redis-server "
                        "that listens on its port is followed")
    p.add_argument("--port", type=runner.port_list, metavar="PORT[,PORT...]",
                   help="TCP port(s) of the redis-server(s) to follow, across restarts")
    p.add_argument("--all", action="store_true", help="follow every redis-server on this host, new ones too")
    runner.add_analysis_args(p, refresh=False)
    p.add_argument("--min-ms", type=float, metavar="MS",
                   help="a request this slow is exported as a span (default: a fifth of --stall-ms)")
    p.add_argument("--poll-ms", type=int, default=POLL_MS, help=f"ring buffer drain interval (default {POLL_MS})")
    p.add_argument("--listen", default=AGENT_LISTEN, metavar="ADDR:PORT",
                   help=f"where to serve Prometheus /metrics (default {AGENT_LISTEN})")
    p.add_argument("--host-label", metavar="NAME",
                   help="the host part of each instance label (NAME:PORT) and of server.address in spans "
                        "(default: this host's name; in a pod, pass the node's name)")
    p.add_argument("--otlp-endpoint", metavar="URL",
                   help="export stalls and slow requests as spans to this OTLP/HTTP collector "
                        "(e.g. http://127.0.0.1:4318)")
    p.add_argument("--interval", type=float, metavar="S",
                   help="also print each S seconds' own figures (counts, percentiles, rps) as a JSON line on "
                        "stdout, \"event\": \"interval\" (stall lines: \"event\": \"stall\")")
    add_credential_args(p)
    p.set_defaults(mode="engine")
    return p


def run(args) -> int:
    if not (args.pid or args.port or args.all):
        raise UsageError("agent needs its targets: --port, --pid or --all")
    # no INFO sampler: its connections, opened while a running session follows the server (a handover),
    # would be counted as requests; the agent's outputs do not use INFO
    options = dataclasses.replace(TraceOptions.from_args(args), info_every_s=0)
    if args.interval is not None:
        from tracer.runtime.intervals import check_interval
        check_interval(args.interval)
    try:
        from tracer.agent import metrics
        from tracer.agent.preflight import require_agent_privileges
        from tracer.agent.supervisor import Agent
        addr, port = metrics.parse_listen(args.listen)
        require_agent_privileges()      # before serving anything: a unit without its capabilities fails now
        spans = None
        if args.otlp_endpoint:
            from tracer.agent.otlp import SpanExport
            spans = SpanExport(args.otlp_endpoint, host=args.host_label or "")
    except ImportError as err:
        raise TracerError(f"the agent needs {err.name}", NEEDS) from None
    agent = Agent(options, spans=spans, host=args.host_label, interval_s=args.interval)
    server = metrics.serve(metrics.AgentCollector(agent.figures), addr, port)
    print(f"redis-tracer agent: serving /metrics on {addr}:{port}", file=sys.stderr, flush=True)
    try:
        return agent.run()
    finally:
        server.shutdown()
