"""Doctor logic with injected probes, plus one real run on this machine (bpf)."""
from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tracer.kernel import doctor
from tracer.commands import doctor as doctor_cmd
from tracer.credentials import NO_CREDENTIALS, Credentials, credentials_from_args
from tracer.kernel.elfsyms import Symbol
from tracer.errors import TracerError
from tracer.kernel.headers import EXACT, MISSING, SUBSTITUTED, HeadersStatus
from tracer.kernel.target import Target

REPO = Path(__file__).resolve().parents[1]
TRACEFS = "/fake/tracing"
ALL_EVENTS = {f"{TRACEFS}/events/syscalls/sys_{side}_{call}"
              for call in doctor.SYSCALL_TRACEPOINTS for side in ("enter", "exit")}
ALL_EVENTS |= {f"{TRACEFS}/events/sock/{name}" for name in doctor.SOCK_TRACEPOINTS}
ALL_EVENTS |= {f"{TRACEFS}/uprobe_events"}


class FakeProbes(doctor.SystemProbes):
    """A machine where everything works; tests break one thing at a time."""

    def __init__(self, **overrides):
        self.euid_value = 0
        self.caps = (1 << 41) - 1
        self.bcc = types.SimpleNamespace(BPF=object, __version__="0.26.0", __file__="/usr/lib/bcc/__init__.py")
        self.bcc_error = None
        self.prog_load = 0
        self.compile_error = None
        self.tracefs_root = TRACEFS
        self.events_readable = True
        self.paths = set(ALL_EVENTS)
        self.header_status = HeadersStatus(EXACT, "6.8.0-1", "/lib/modules/6.8.0-1/build", detail="6.8.0-1")
        self.target = Target(pid=42, exe="/usr/bin/redis-server", listen_ports=[6379], port=6379,
                             comm="redis-server")
        self.ping_error = None
        self.symbol = Symbol("call", 0x6E620, 1740, 2, 1, 15, ".dynsym")
        self.compiled = 0
        self.__dict__.update(overrides)

    def euid(self):
        return self.euid_value

    def cap_eff(self):
        return self.caps

    def machine(self):
        return "x86_64"

    def import_bcc(self):
        return (None, self.bcc_error) if self.bcc_error else (self.bcc, None)

    def bpf_prog_load(self):
        return self.prog_load

    def bcc_compile(self):
        self.compiled += 1
        return self.compile_error

    def tracefs(self):
        return self.tracefs_root

    def readable_dir(self, path):
        return self.events_readable

    def exists(self, path):
        return path in self.paths

    def headers(self):
        return self.header_status

    def find_target(self, pid, port, socket=None):
        if isinstance(self.target, TracerError):
            raise self.target
        return self.target

    def ping(self, port, credentials):
        self.pinged_with = credentials
        return self.ping_error

    def function_symbol(self, pid, name):
        if isinstance(self.symbol, Exception):
            raise self.symbol
        return self.symbol


def by_name(checks):
    return {c.name: c for c in checks}


def test_everything_present_is_ok():
    checks = doctor.run_checks(probes=FakeProbes())
    assert doctor.tracing_ok(checks)
    assert [c.name for c in checks if not c.ok] == ["kprobes"]  # informational only
    names = [c.name for c in checks]
    for call in doctor.SYSCALL_TRACEPOINTS:
        assert f"tracepoint syscalls:sys_{{enter,exit}}_{call}" in names
    assert "target" not in names  # no --pid/--port given


@pytest.mark.parametrize("overrides,name,detail,fix", [
    ({"euid_value": 1000, "caps": 0}, "privileges", "not root (uid 1000)", "run as root: sudo redis-tracer doctor"),
    ({"bcc_error": "ModuleNotFoundError: No module named 'bcc'"}, "bcc python module", "not importable",
     "apt-get install python3-bpfcc"),
    ({"bcc": types.SimpleNamespace(__file__="/venv/site-packages/bcc/__init__.py")}, "bcc python module",
     "is not BCC", "pip uninstall bcc"),
    ({"prog_load": errno.ENOSYS}, "bpf() syscall", "CONFIG_BPF_SYSCALL", "distro kernel"),
    ({"prog_load": errno.EPERM}, "bpf() syscall", "EPERM", "--privileged"),
    ({"tracefs_root": None, "paths": set()}, "tracefs", "not mounted", "mount -t tracefs nodev /sys/kernel/tracing"),
    ({"header_status": HeadersStatus(MISSING, "6.8.0-1", "/lib/modules/6.8.0-1/build", detail="no kernel headers",
                                     fix="run sudo scripts/bootstrap")}, "kernel headers", "missing", "bootstrap"),
    ({"compile_error": "Failed to compile BPF module"}, "bcc compile and load", "Failed to compile", "bootstrap"),
    ({"paths": ALL_EVENTS - {f"{TRACEFS}/events/syscalls/sys_exit_writev"}},
     "tracepoint syscalls:sys_{enter,exit}_writev", "missing sys_exit_writev", "CONFIG_FTRACE_SYSCALLS"),
])
def test_each_blocking_failure_names_its_fix(overrides, name, detail, fix):
    checks = doctor.run_checks(probes=FakeProbes(**overrides))
    check = by_name(checks)[name]
    assert not check.ok and check.level == doctor.ERROR and check.blocking
    assert detail in check.detail and fix in check.fix
    assert not doctor.tracing_ok(checks)
    assert check.line().startswith(f"✗ {name}: ") and f"(fix: {check.fix})" in check.line()


def test_unreadable_tracefs_makes_tracepoints_unknown_not_missing():
    checks = by_name(doctor.run_checks(probes=FakeProbes(events_readable=False, euid_value=1000, caps=0)))
    assert "not readable" in checks["tracefs"].detail
    accept = checks["tracepoint syscalls:sys_{enter,exit}_accept"]
    assert accept.detail.startswith("unknown:") and accept.blocking


def test_bcc_missing_skips_the_compile():
    probes = FakeProbes(bcc_error="ImportError: libbcc.so.0")
    check = by_name(doctor.run_checks(probes=probes))["bcc compile and load"]
    assert probes.compiled == 0 and "skipped" in check.detail and check.blocking


def test_warnings_do_not_block():
    probes = FakeProbes(
        header_status=HeadersStatus(SUBSTITUTED, "6.18.1", "/lib/modules/6.18.1/build", detail="6.1 for 6.18",
                                    fix="install linux-headers-6.18.1 if your distro ships it"),
        paths=ALL_EVENTS - {f"{TRACEFS}/events/sock/sk_data_ready", f"{TRACEFS}/uprobe_events"},
        ping_error="NOAUTH Authentication required.", symbol=None)
    checks = by_name(doctor.run_checks(port=6379, probes=probes))
    assert doctor.tracing_ok(list(checks.values()))
    for name in ("kernel headers", "tracepoint sock:sk_data_ready", "uprobes", "PING", "uprobe symbol call()"):
        assert not checks[name].ok and checks[name].level == doctor.WARN, name
        assert checks[name].line().startswith("! ")
    assert "latency starts at the read" in checks["tracepoint sock:sk_data_ready"].detail
    assert checks["PING"].detail == "port 6379 wants a password (tracing works without)"
    assert checks["PING"].fix.startswith("set REDISCLI_AUTH=<password>")
    assert "inferred" in checks["uprobe symbol call()"].detail


def test_target_found_pings_and_has_call():
    checks = by_name(doctor.run_checks(pid=42, probes=FakeProbes()))
    assert checks["target"].ok and "pid 42 port 6379" in checks["target"].detail
    assert checks["PING"].ok and checks["PING"].detail == "port 6379 answered"
    assert checks["uprobe symbol call()"].ok and ".dynsym at 0x6e620" in checks["uprobe symbol call()"].detail


def test_credentials_reach_the_ping_and_refusals_say_so():
    probes = FakeProbes(ping_error="WRONGPASS invalid username-password pair or user is disabled.")
    args = types.SimpleNamespace(pid=42, port=None, json=True, user="bob", password="pw-1")
    out = io.StringIO()
    doctor_cmd.run(args, probes=probes, out=out)
    assert probes.pinged_with == Credentials("bob", "pw-1")
    ping = next(c for c in json.loads(out.getvalue())["checks"] if c["name"] == "PING")
    assert ping["detail"].startswith("port 6379 refused the password for user bob (wrong password")
    assert "pw-1" not in out.getvalue() and "pw-1" not in repr(probes.pinged_with)


def test_credentials_come_from_the_environment_first_then_options():
    ns = types.SimpleNamespace
    assert credentials_from_args(ns(), {}) == NO_CREDENTIALS
    assert credentials_from_args(ns(user=None, password=None), {"REDISCLI_AUTH": "env-pw"}) == Credentials(None, "env-pw")
    assert credentials_from_args(ns(user="u", password="opt-pw"), {"REDISCLI_AUTH": "env-pw"}) == Credentials("u", "opt-pw")
    assert Credentials(None, "pw").auth_args() == ("AUTH", "default", "pw")   # never the 1-argument form
    assert NO_CREDENTIALS.auth_args() is None
    with pytest.raises(TracerError, match="--user bob needs a password") as err:
        credentials_from_args(ns(user="bob", password=None), {})
    assert "REDISCLI_AUTH" in err.value.fix


def test_target_not_found_blocks_and_skips_target_checks():
    probes = FakeProbes(target=TracerError("nothing listens on TCP port 7777", "start Redis or pass the right --port"))
    checks = by_name(doctor.run_checks(port=7777, probes=probes))
    assert checks["target"].blocking and checks["target"].fix == "start Redis or pass the right --port"
    assert "PING" not in checks and "uprobe symbol call()" not in checks


def test_unreadable_binary_is_a_warning():
    checks = by_name(doctor.run_checks(pid=42, probes=FakeProbes(symbol=PermissionError("denied"))))
    assert checks["uprobe symbol call()"].level == doctor.WARN and "cannot read" in checks["uprobe symbol call()"].detail


def test_bpf_unavailable_reason_is_first_blocking_cheap_check():
    assert doctor.bpf_unavailable_reason(FakeProbes()) is None
    reason = doctor.bpf_unavailable_reason(FakeProbes(euid_value=1000, caps=0, tracefs_root=None))
    assert reason.startswith("privileges: not root")
    assert doctor.bpf_unavailable_reason(FakeProbes(tracefs_root=None)) == "tracefs: not mounted"
    probes = FakeProbes(compile_error="boom")
    assert doctor.bpf_unavailable_reason(probes) is None and probes.compiled == 0  # no compile: it is slow


def test_cli_text_and_exit_codes():
    args = types.SimpleNamespace(pid=None, port=None, json=False)
    out = io.StringIO()
    assert doctor_cmd.run(args, probes=FakeProbes(), out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "✓ privileges: root"
    assert lines[-1] == "doctor: tracing can work"
    out = io.StringIO()
    assert doctor_cmd.run(args, probes=FakeProbes(tracefs_root=None), out=out) == 1
    assert out.getvalue().splitlines()[-1] == "doctor: 15 problems to fix before tracing"  # tracefs + 14 syscalls
    assert "✗ tracefs: not mounted (fix: mount -t tracefs nodev /sys/kernel/tracing" in out.getvalue()


def test_cli_falls_back_to_ascii_symbols():
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    doctor_cmd.run(types.SimpleNamespace(pid=None, port=None, json=False), probes=FakeProbes(), out=out)
    out.seek(0)
    text = out.buffer.getvalue().decode("ascii")
    assert text.startswith("OK privileges: root") and "- kprobes:" in text


def test_cli_json_shape():
    out = io.StringIO()
    args = types.SimpleNamespace(pid=None, port=6379, json=True)
    assert doctor_cmd.run(args, probes=FakeProbes(ping_error="timeout"), out=out) == 0
    data = json.loads(out.getvalue())
    assert data["ok"] is True
    assert all(set(c) == {"name", "ok", "level", "detail", "fix"} for c in data["checks"])
    ping = next(c for c in data["checks"] if c["name"] == "PING")
    assert ping == {"name": "PING", "ok": False, "level": "warn", "detail": "port 6379: timeout",
                    "fix": "tracing still works; check requirepass/ACL or whether Redis is stuck"}


def _doctor_command() -> list[str]:
    script = REPO / ".venv" / "bin" / "redis-tracer"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tracer"]


@pytest.mark.bpf
def test_real_doctor_on_this_machine(redis_server):
    proc = subprocess.run(_doctor_command() + ["doctor", "--port", str(redis_server.port)],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    expected = ["privileges", "bcc python module", "bpf() syscall", "tracefs", "kernel headers",
                "bcc compile and load", "uprobes", "kprobes", "target", "PING", "uprobe symbol call()"]
    expected += [f"tracepoint syscalls:sys_{{enter,exit}}_{c}" for c in doctor.SYSCALL_TRACEPOINTS]
    expected += [f"tracepoint sock:{e}" for e in doctor.SOCK_TRACEPOINTS]
    for name in expected:
        assert any(line[2:].startswith(f"{name}: ") for line in lines), f"no line for {name}:\n{proc.stdout}"
    assert not any(line.startswith("✗") for line in lines)
    assert f"✓ target: redis-server pid {redis_server.pid} port {redis_server.port}" in proc.stdout
    assert f"✓ PING: port {redis_server.port} answered" in proc.stdout
    assert lines[-1].startswith("doctor: tracing can work")


def _server_stats(port, password=None) -> dict:
    """Every error counter of INFO errorstats, and failed/rejected calls of INFO commandstats,
    read on a plain RESP connection that adds no error itself (redis-py's handshake would)."""
    from tracer.kernel.redis_client import redis_connection

    with redis_connection(port, Credentials(None, password) if password else NO_CREDENTIALS) as call:
        text = call("INFO", "errorstats") + call("INFO", "commandstats")
    stats = {}
    for line in text.splitlines():
        name, _, fields = line.partition(":")
        counts = dict(f.split("=") for f in fields.split(",") if "=" in f)
        if name.startswith("errorstat_") or counts.get("failed_calls", "0") != "0" or \
                counts.get("rejected_calls", "0") != "0":
            stats[name] = (counts.get("count"), counts.get("failed_calls"), counts.get("rejected_calls"))
    return stats


def _doctor(port, *extra, env=None):
    proc = subprocess.run(_doctor_command() + ["doctor", "--port", str(port), *extra], capture_output=True,
                          text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return next(line for line in proc.stdout.splitlines() if line[2:].startswith("PING:"))


@pytest.mark.bpf
def test_doctor_leaves_no_error_in_the_targets_statistics(redis_factory):
    """Redis 7.0 without a password once counted 3 errorstat_ERR per doctor run (redis-py's HELLO and
    CLIENT SETINFO), with requirepass 11 errorstat_NOAUTH."""
    plain = redis_factory()
    protected = redis_factory(requirepass="Doctor-pw-5k2")
    user = protected.client(password="Doctor-pw-5k2")
    user.execute_command("ACL", "SETUSER", "tracer", "on", ">Tracer-pw-8j1", "+ping")
    user.close()
    before = _server_stats(plain.port), _server_stats(protected.port, "Doctor-pw-5k2")
    assert _doctor(plain.port) == f"✓ PING: port {plain.port} answered"
    # a password given for a server that has none: `AUTH default <pw>` is accepted, not refused
    assert _doctor(plain.port, env={"REDISCLI_AUTH": "unneeded"}) == f"✓ PING: port {plain.port} answered"
    assert _doctor(protected.port, env={"REDISCLI_AUTH": "Doctor-pw-5k2"}) == \
        f"✓ PING: port {protected.port} answered"
    assert _doctor(protected.port, "--user", "tracer", "--password", "Tracer-pw-8j1") == \
        f"✓ PING: port {protected.port} answered"
    after = _server_stats(plain.port), _server_stats(protected.port, "Doctor-pw-5k2")
    assert after == before


@pytest.mark.bpf
def test_doctor_without_credentials_explains_noauth_in_one_line(redis_factory):
    protected = redis_factory(requirepass="Doctor-pw-5k2")
    before = _server_stats(protected.port, "Doctor-pw-5k2")   # the server's start-up probe got one NOAUTH
    line = _doctor(protected.port)
    assert line == (f"! PING: port {protected.port} wants a password (tracing works without) "
                    "(fix: set REDISCLI_AUTH=<password> (or pass --password; add --user NAME for an ACL user))")
    # one PING, one NOAUTH: what any unauthenticated command costs on Redis 7.0 (not 11)
    after = _server_stats(protected.port, "Doctor-pw-5k2")
    assert int(after["errorstat_NOAUTH"][0]) - int(before["errorstat_NOAUTH"][0]) == 1
    assert int(after["cmdstat_ping"][2]) - int(before["cmdstat_ping"][2]) == 1
    assert set(after) == set(before)      # no other error, failed or rejected command


def test_hot_path_check_says_which_path_runs(monkeypatch):
    from tracer import native
    from tracer.kernel.doctor import INFO, WARN, check_hot_path

    monkeypatch.delenv(native.PURE_ENV, raising=False)
    monkeypatch.setattr(native, "MODULES", {"tracer.decode._not_built_native": "tracer.decode.resp"})
    missing = check_hot_path()
    assert not missing.ok and missing.level == WARN and not missing.blocking
    assert "pure-Python reference path" in missing.detail and "_not_built_native" in missing.detail
    assert "python3-dev" in missing.fix
    monkeypatch.setenv(native.PURE_ENV, "1")
    forced = check_hot_path()
    assert forced.ok and forced.level == INFO and native.PURE_ENV in forced.detail


def test_a_stale_compiled_module_leaves_the_reference_path_and_doctor_says_so(monkeypatch):
    """A build older than the Python beside it (configure() refuses its arguments) must not break the
    import: that stage stays on the pure-Python path, and doctor names the module."""
    from tracer import native
    from tracer.kernel.doctor import WARN, check_hot_path

    monkeypatch.delenv(native.PURE_ENV, raising=False)
    monkeypatch.setattr(native, "_mismatched", {})

    def configure(mod):
        raise TypeError("function takes exactly 8 arguments (9 given)")
    assert native.load("json", configure) is None
    check = check_hot_path()
    assert not check.ok and check.level == WARN
    assert "json: built from other sources" in check.detail and "9 given" in check.detail
