"""A protected redis-server for real: TLS only (tls-port, a CA made here with openssl), requirepass
and an ACL user. The tracer asks it for INFO/CONFIG through redis-py with the given credentials;
doctor says in one line what is wrong; the password never reaches ps, the trace file or stderr."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.tracer_proc import REPO, TracerProcess, report_of
from tracer.sandbox.redis_server import find_redis_server, free_port

ADMIN_PW = "Admin-pw-7q2"
TRACER_PW = "Tracer-pw-4m8"


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(d) -> None:
    """ca.crt, server.{crt,key} and client.{crt,key}, signed by the CA (P-256 keys, quick to make; 2 days)."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=redis-tracer-test-ca", cwd=d)
    for name in ("server", "client"):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", cwd=d)


@pytest.fixture
def tls_server(tmp_path):
    """A redis-server listening only with TLS on a loopback port, with requirepass, client
    certificates required, and an ACL user "tracer" allowed what the tracer asks."""
    import redis

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    make_certificates(tmp_path)
    port = free_port()
    c = lambda name: str(tmp_path / name)  # noqa: E731
    proc = subprocess.Popen([find_redis_server(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", c("server.crt"), "--tls-key-file", c("server.key"),
                             "--tls-ca-cert-file", c("ca.crt"), "--tls-auth-clients", "yes",
                             "--requirepass", ADMIN_PW, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    admin = redis.Redis(host="127.0.0.1", port=port, password=ADMIN_PW, ssl=True, ssl_ca_certs=c("ca.crt"),
                        ssl_certfile=c("client.crt"), ssl_keyfile=c("client.key"), ssl_check_hostname=False,
                        driver_info=None, protocol=2, socket_timeout=5)
    deadline = time.monotonic() + 10
    while True:
        try:
            admin.ping()
            break
        except (redis.ConnectionError, OSError):
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    admin.execute_command("ACL", "SETUSER", "tracer", "on", f">{TRACER_PW}", "+ping", "+info", "+command|info", "+command|list",
                          "+config|get")
    admin.execute_command("ACL", "SETUSER", "limited", "on", f">{TRACER_PW}", "+info")
    yield port, tmp_path, admin
    admin.close()
    proc.terminate()
    proc.wait(timeout=10)


def tls_args(d, client_cert: bool = True) -> list[str]:
    args = ["--tls-ca", str(d / "ca.crt")]
    return args + (["--tls-cert", str(d / "client.crt"), "--tls-key", str(d / "client.key")] if client_cert else [])


def doctor_ping(port: int, *args: str, password: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if password is not None:
        env["REDISCLI_AUTH"] = password
    proc = subprocess.run([sys.executable, "-m", "tracer", "doctor", "--port", str(port), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**env, "PYTHONIOENCODING": "utf-8"})
    assert "Traceback" not in proc.stderr
    return next(line for line in proc.stdout.splitlines() if line[2:].startswith("PING:"))


@pytest.mark.bpf
def test_record_over_tls_as_an_acl_user_keeps_the_password_out(tls_server):
    port, d, admin = tls_server
    trace = d / "t.rtrace"
    tracer = TracerProcess("record", "--port", str(port), "--user", "tracer", *tls_args(d), "-o", str(trace),
                           env={"REDISCLI_AUTH": TRACER_PW})
    with open(f"/proc/{tracer.proc.pid}/cmdline", "rb") as f:
        cmdline = f.read()
    for i in range(20):
        admin.set(f"k{i}", "v")
    rc, _ = tracer.stop()
    assert rc == 0, tracer.stderr_text()
    assert "did not say its version" not in tracer.stderr_text()
    assert "clients' TLS traffic is encrypted in the syscalls" in tracer.stderr_text()
    report = report_of(trace)
    assert report["target"]["redis_version"].startswith("7.")   # INFO answered over TLS, as "tracer"
    for where, data in (("ps", cmdline), ("stderr", tracer.stderr_text().encode()), ("trace", trace.read_bytes())):
        assert TRACER_PW.encode() not in data and ADMIN_PW.encode() not in data, where


def ping_line(port: int, d, user=None, password=None, tls: bool = True, ca: bool = True, cert: bool = True) -> str:
    """doctor's PING line, from its check run in this process (the CLI wiring is tested above)."""
    from tracer.credentials import Credentials, TlsOptions
    from tracer.kernel import doctor
    from tracer.kernel.redis_client import Endpoint

    options = TlsOptions(ca=str(d / "ca.crt") if ca else None, cert=str(d / "client.crt") if cert else None,
                         key=str(d / "client.key") if cert else None) if tls else None
    return doctor.check_ping(doctor.SystemProbes(), Endpoint(port=port), Credentials(user, password, options)).line()


@pytest.mark.bpf
def test_doctor_explains_each_refusal_in_one_line(tls_server):
    port, d, _ = tls_server
    assert doctor_ping(port, "--user", "tracer", *tls_args(d), password=TRACER_PW) == f"✓ PING: port {port} answered"
    assert ping_line(port, d, password=ADMIN_PW) == f"✓ PING: port {port} answered"
    line = ping_line(port, d, "tracer", "not-it")
    assert "refused the password for user tracer" in line and "not-it" not in line
    line = ping_line(port, d)
    assert "wants a password" in line and "REDISCLI_AUTH" in line
    line = ping_line(port, d, "limited", TRACER_PW)
    assert "ACL user limited lacks a permission the tracer needs (NOPERM" in line and "ACL SETUSER limited" in line
    assert "pass --tls (and --tls-ca)" in ping_line(port, d, password=ADMIN_PW, tls=False)
    assert "pass --tls-ca" in ping_line(port, d, password=ADMIN_PW, ca=False)
    # tls-auth-clients yes: without a client certificate the handshake is refused
    assert "answered" not in ping_line(port, d, password=ADMIN_PW, cert=False)


def test_engine_asks_for_its_command_table_with_the_credentials(tls_server):
    """--engine asks the server for its command names before attaching: over TLS, as the ACL user."""
    from tracer.credentials import Credentials, TlsOptions
    from tracer.engine.session import EngineSession
    from tracer.kernel.target import find_target

    port, d, admin = tls_server
    tls = TlsOptions(ca=str(d / "ca.crt"), cert=str(d / "client.crt"), key=str(d / "client.key"))
    session = EngineSession([find_target(port=port)], credentials=Credentials("tracer", TRACER_PW, tls))
    assert session.table.source == "server+static"
    refused = EngineSession([find_target(port=port)], credentials=Credentials(None, None, tls))
    assert refused.table.source.startswith("static (RespError: NOAUTH")
    assert admin.info("errorstats") == {"errorstat_NOAUTH": {"count": 1}}    # the refused one only
