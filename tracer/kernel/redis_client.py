"""The tracer's own connections to a target redis-server, all through redis-py.

Used for the query before attaching (version, config), the INFO sampler and doctor's checks. Each
connection is made so that the target's statistics only see the commands we send:
- driver_info=None: no CLIENT SETINFO (an error reply on Redis < 7.2);
- protocol=2: no HELLO (an error reply on Redis < 6), and replies in the shapes callers expect;
- AUTH always names the user ("default" without --user): `AUTH <password>` alone is an error on a
  server whose default user has no password;
- commands go through the connection's send_command/read_response: redis-py's response callbacks
  (INFO into a dict, ...) are not wanted here, the raw replies are.
A target in another network namespace is reached on its own loopback (tracer/kernel/netns.py).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from tracer.credentials import NO_CREDENTIALS, Credentials

LOOPBACK = "127.0.0.1"


class RespError(Exception):
    """An error reply of the target, with its code (e.g. "NOAUTH Authentication required.")."""


@dataclass(frozen=True)
class Endpoint:
    """Where a target answers: a TCP port on its loopback, or a unix socket path."""

    port: int | None = None
    socket: str | None = None
    host: str = LOOPBACK
    netns_pid: int | None = None    # connect from inside this process's network namespace

    def describe(self) -> str:
        return f"socket {self.socket}" if self.socket else f"port {self.port}"


def _error_text(err: Exception) -> str:
    """redis-py strips the error code from its exception's text: put it back."""
    code = getattr(err, "status_code", None)
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"{code} {text}" if code and not text.startswith(code) else text


def _connection(endpoint: Endpoint, credentials: Credentials, timeout: float):
    from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection

    common = dict(username=(credentials.user or "default") if credentials.password is not None else None,
                  password=credentials.password, socket_timeout=timeout, socket_connect_timeout=timeout,
                  driver_info=None, protocol=2, decode_responses=True, retry=None)
    if endpoint.socket:
        return UnixDomainSocketConnection(path=endpoint.socket, **common)
    tls = credentials.tls
    if tls is None:
        return Connection(host=endpoint.host, port=endpoint.port, **common)
    return SSLConnection(host=endpoint.host, port=endpoint.port, ssl_ca_certs=tls.ca, ssl_certfile=tls.cert,
                         ssl_keyfile=tls.key, ssl_cert_reqs="required" if tls.verify else "none",
                         ssl_check_hostname=False, **common)


@contextlib.contextmanager
def redis_connection(endpoint: Endpoint | int, credentials: Credentials = NO_CREDENTIALS, timeout: float = 2.0):
    """An authenticated connection; yields call(*args) -> the raw reply (strings, lists, ints, None).
    An error reply raises RespError; an unreachable or closed server raises OSError (ConnectionError).
    call.sock is the connected socket (the target sees us through it: fdinfo.server_fd_of)."""
    from redis import exceptions

    if isinstance(endpoint, int):
        endpoint = Endpoint(port=endpoint)
    conn = _connection(endpoint, credentials, timeout)

    def connect():
        conn.connect()

    try:
        if endpoint.netns_pid is not None and not endpoint.socket:
            from tracer.kernel.netns import call_in_netns

            call_in_netns(endpoint.netns_pid, connect)
        else:
            connect()
    except exceptions.ResponseError as err:      # AUTH refused (WRONGPASS, NOPERM)
        conn.disconnect()
        raise RespError(_error_text(err)) from None
    except exceptions.AuthenticationError as err:
        conn.disconnect()
        raise RespError(_error_text(err)) from None
    except exceptions.RedisError as err:
        conn.disconnect()
        raise ConnectionError(_error_text(err)) from None

    def call(*args: str):
        if conn._sock is None:      # never reconnect: a new socket would be made in our own namespace
            raise ConnectionError("connection closed")
        try:
            conn.send_command(*args, check_health=False)
            return conn.read_response()
        except (exceptions.ResponseError, exceptions.AuthenticationError) as err:
            raise RespError(_error_text(err)) from None
        except exceptions.RedisError as err:
            raise ConnectionError(_error_text(err)) from None

    call.sock = conn._sock
    try:
        yield call
    finally:
        conn.disconnect()


def socket_path_in(pid: int, path: str, proc: str = "/proc") -> str:
    """A unix socket path of process `pid` as the tracer can open it: through the process's root
    when it lives in another mount namespace (a container, whose /tmp is not ours)."""
    try:
        same = os.stat(f"{proc}/{pid}/ns/mnt").st_ino == os.stat(f"{proc}/self/ns/mnt").st_ino
    except OSError:
        same = True     # cannot tell: the path as the process names it
    return path if same else f"{proc}/{pid}/root{path}"
