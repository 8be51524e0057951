"""Redis's own evidence for the traced interval, asked for when a traced run ends (diagnose, record).

redis-py with driver_info=None (no CLIENT SETINFO: nothing of ours in the server's client list but the
connection) and the run's credentials (--user/--password/REDISCLI_AUTH). A target that does not answer,
or refuses a command (auth, renamed or forbidden commands), gives what it answered and a note: tracing
never fails because of it. The probes may still be attached but nothing is drained any more, so these
commands never show up as requests in the trace.
"""
from __future__ import annotations

import time

from tracer.decode.redis_log import SLOWLOG_ENTRIES, LatencyEvent, RedisLog, redis_log_record, slow_entry, text_of

TIMEOUT_S = 2.0


def redis_log_records(targets, credentials) -> list[bytes]:
    """A REDIS record per target that has a TCP port."""
    return [redis_log_record(collect(t, credentials)) for t in targets if getattr(t, "port", None)]


def collect(target, credentials) -> RedisLog:
    """Ask one target; what fails is noted, never raised."""
    import redis

    offset_ns = time.time_ns() - time.monotonic_ns()

    def to_mono(unix_s: float) -> int:
        return int(unix_s * 1e9) - offset_ns

    notes, latency, slowlog, threshold = [], [], [], None
    try:
        client = redis.Redis(host="127.0.0.1", port=target.port, username=credentials.user,
                             password=credentials.password, socket_timeout=TIMEOUT_S,
                             socket_connect_timeout=TIMEOUT_S, driver_info=None, retry=None, protocol=2)
    except Exception as err:  # noqa: BLE001 - any failure is a note
        return RedisLog(tgid=target.pid, ts=time.monotonic_ns(), notes=[f"not asked: {err}"])
    with client:
        try:
            for event, ts, latest, worst in client.execute_command("LATENCY", "LATEST"):
                latency.append(LatencyEvent(text_of(event), to_mono(int(ts)), int(latest), int(worst)))
        except Exception as err:  # noqa: BLE001
            notes.append(f"LATENCY LATEST: {text_of(err).splitlines()[0]}")
        try:
            slowlog = [slow_entry(e, to_mono) for e in client.slowlog_get(SLOWLOG_ENTRIES)]
        except Exception as err:  # noqa: BLE001
            notes.append(f"SLOWLOG GET: {text_of(err).splitlines()[0]}")
        try:
            got = client.config_get("latency-monitor-threshold")
            threshold = int(got.get("latency-monitor-threshold", got.get(b"latency-monitor-threshold", 0)))
        except Exception:  # noqa: BLE001 - CONFIG may be renamed or forbidden: the threshold stays unknown
            pass
    return RedisLog(tgid=target.pid, ts=time.monotonic_ns(), latency=latency, slowlog=slowlog,
                    latency_threshold_ms=threshold, notes=notes)


