"""The headless agent (`redis-tracer agent`): the always-on engine run unattended, its aggregates served
to Prometheus, its stalls and slow requests exported as OpenTelemetry spans and logged as JSON lines."""
