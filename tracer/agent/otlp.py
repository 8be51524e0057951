"""OTLP/HTTP export of stalls and slow requests as spans (opt-in: `agent --otlp-endpoint URL`).

OpenTelemetry's database conventions for Redis: every span carries db.system.name=redis,
server.address/server.port of the traced instance and, for a request, db.operation.name (the
command). A stall is a span of its own (the busy span of the main thread) with its culprit requests
as children; each victim (a request of another connection that waited through it) is a span of its
own trace linked to the stall, and a slow request outside any stall a plain span. Keys, values and
client addresses are never attributes.
"""
from __future__ import annotations

import socket
import threading

TRACES_PATH = "/v1/traces"
SCOPE = "redis-tracer"
EXPORT_TIMEOUT_S = 5.0      # one export to the collector; a collector that is down must not hold the agent
CLOSE_TIMEOUT_S = 5.0       # the flush at SIGTERM, well inside the unit's TimeoutStopSec=30


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: a collector's base address gets /v1/traces."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


class SpanExport:
    def __init__(self, endpoint: str, service_name: str = "redis-tracer", host: str = ""):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": service_name, "host.name": host or socket.gethostname()})
        self.provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=EXPORT_TIMEOUT_S)
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000,
                                                            export_timeout_millis=EXPORT_TIMEOUT_S * 1000))
        self.tracer = self.provider.get_tracer(SCOPE)

    @staticmethod
    def _server(address: str, port: int | None) -> dict:
        out = {"db.system.name": "redis", "server.address": address}
        if port:
            out["server.port"] = port
        return out

    def _request(self, req, server: dict, role: str, to_wall, context=None, links=()):
        from opentelemetry.trace import SpanKind

        attributes = dict(server, **{"db.operation.name": req.command or "?", "redis_tracer.role": role,
                                     "redis_tracer.batch": req.batch})
        for phase, us in req.phases_us().items():
            if us is not None:
                attributes[f"redis_tracer.phase.{phase}_us"] = us
        span = self.tracer.start_span(req.command or "?", context=context, kind=SpanKind.CLIENT,
                                      attributes=attributes, links=list(links),
                                      start_time=to_wall(req.start_ts))
        span.end(end_time=to_wall(req.reply_end_ts or req.read_end_ts or req.start_ts))

    def slow_request(self, req, address: str, port: int | None, to_wall) -> None:
        self._request(req, self._server(address, port), "slow", to_wall)

    def stall(self, verdict, culprits: list, victims: list, address: str, port: int | None, pid: int,
              to_wall) -> None:
        """to_wall(monotonic ns) -> epoch ns."""
        from opentelemetry import trace
        from opentelemetry.trace import Link, SpanKind

        server = self._server(address, port)
        attributes = dict(server, **{"redis_tracer.stall.class": verdict.class_,
                                     "redis_tracer.stall.duration_ms": verdict.duration_ms,
                                     "redis_tracer.stall.victims": verdict.victims,
                                     "redis_tracer.stall.victim_added_ms": verdict.victim_added_ms,
                                     "redis_tracer.stall.evidence": [str(e) for e in verdict.evidence],
                                     "process.pid": pid})
        if verdict.command:
            attributes["db.operation.name"] = verdict.command
        span = self.tracer.start_span(f"stall {verdict.class_}", kind=SpanKind.INTERNAL, attributes=attributes,
                                      start_time=to_wall(verdict.start_ts))
        span.end(end_time=to_wall(verdict.end_ts))
        inside = trace.set_span_in_context(span)
        for req in culprits:
            self._request(req, server, "culprit", to_wall, context=inside)
        link = Link(span.get_span_context(), {"redis_tracer.link": "delayed_by_stall"})
        for req in victims:
            self._request(req, server, "victim", to_wall, links=[link])

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Flushes what is queued and stops; gives up after timeout_s (the collector may be down and
        the exporter retrying). Returns whether it finished."""
        closing = threading.Thread(target=self.provider.shutdown, name="otlp-close", daemon=True)
        closing.start()
        closing.join(timeout_s)
        return not closing.is_alive()
