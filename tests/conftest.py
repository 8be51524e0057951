"""Shared fixtures: real throw-away redis-servers, and the `bpf` marker policy.

Tests marked @pytest.mark.bpf need root and a BPF-capable kernel. They are skipped
with the reason when tracing is unavailable, except when REDIS_TRACER_REQUIRE_BPF=1
(CI), where an unavailable BPF is an error: a green CI run must have traced.
"""
from __future__ import annotations

import os

import pytest

from tracer.kernel.doctor import bpf_unavailable_reason
from tracer.sandbox.redis_server import RedisServer

REQUIRE_BPF_ENV = "REDIS_TRACER_REQUIRE_BPF"


def bpf_required() -> bool:
    return os.environ.get(REQUIRE_BPF_ENV, "") not in ("", "0")


def pytest_runtest_setup(item):
    if item.get_closest_marker("bpf") is None:
        return
    reason = bpf_unavailable_reason()  # computed once per session
    if reason is None:
        return
    if bpf_required():
        pytest.fail(f"BPF tracing unavailable but {REQUIRE_BPF_ENV}=1: {reason}", pytrace=False)
    pytest.skip(f"BPF tracing unavailable: {reason}")


@pytest.fixture
def redis_factory(tmp_path):
    """Start redis-servers with extra config: redis_factory(appendonly="yes", io_threads=2).

    Each gets its own free loopback port and data dir; all are stopped at teardown.
    """
    servers: list[RedisServer] = []

    def start(**config) -> RedisServer:
        server = RedisServer(dir=str(tmp_path / f"redis-{len(servers)}"), **config)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(redis_factory) -> RedisServer:
    """A plain redis-server (no persistence) on a free 127.0.0.1 port."""
    return redis_factory()
