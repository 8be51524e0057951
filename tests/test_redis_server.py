"""RedisServer and the fixtures built on it, against a real redis-server binary."""
from __future__ import annotations

import os
import socket

import pytest

from tracer.errors import TracerError
from tracer.redis_server import RedisServer, config_args, free_port, port_is_free


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_start_ping_stop_frees_the_port():
    with RedisServer() as server:
        pid, port, data_dir = server.pid, server.port, server.dir
        assert server.url == f"redis://127.0.0.1:{port}"
        client = server.client()
        assert client.ping() is True
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert not port_is_free(port)
        client.close()
    assert not process_alive(pid)
    assert port_is_free(port)
    assert not os.path.exists(data_dir)  # a dir it created itself is removed
    assert server.pid == 0


def test_extra_config_reaches_the_server(tmp_path):
    server = RedisServer(dir=str(tmp_path / "aof"), appendonly="yes", appendfsync="always", io_threads=2)
    with server:
        client = server.client(decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("io-threads") == {"io-threads": "2"}
        client.set("k", "v")
        assert server.pid == server.proc.pid
    # A dir the caller gave is kept, with what Redis wrote in it.
    assert (tmp_path / "aof" / "appendonlydir").is_dir()
    assert "Ready to accept connections" in (tmp_path / "aof" / "redis.log").read_text()


def test_bad_config_fails_fast_with_the_log_line(tmp_path):
    server = RedisServer(dir=str(tmp_path), start_timeout=5, no_such_directive="x")
    with pytest.raises(TracerError) as err:
        server.start()
    assert "did not come up" in str(err.value)
    assert "no-such-directive" in str(err.value)  # the FATAL CONFIG line from the log
    assert str(tmp_path / "redis.log") in err.value.fix
    assert server.proc is None


def test_taken_port_is_reported_not_retried_when_explicit(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(TracerError, match=f"did not come up on port {port}"):
            RedisServer(port=port, dir=str(tmp_path), start_timeout=5).start()


def test_config_args_spelling():
    assert config_args({"io_threads": 2, "appendonly": True, "save": ""}) == [
        "--io-threads", "2", "--appendonly", "yes", "--save", ""]
    assert config_args({"rename_command": ["CONFIG cfg_1", "ACL acl_2"]}) == [
        "--rename-command", "CONFIG", "cfg_1", "--rename-command", "ACL", "acl_2"]


def test_free_port_is_bindable():
    assert port_is_free(free_port())


def test_fixture_server(redis_server, tmp_path):
    assert redis_server.client().ping()
    assert redis_server.dir.startswith(str(tmp_path))
    assert redis_server.proc.poll() is None


def test_factory_runs_several_with_config(redis_factory):
    plain = redis_factory()
    aof = redis_factory(appendonly="yes", appendfsync="always")
    assert plain.port != aof.port and plain.dir != aof.dir
    assert plain.client().config_get("appendonly")["appendonly"] == "no"
    assert aof.client().config_get("appendfsync")["appendfsync"] == "always"
