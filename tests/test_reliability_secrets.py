"""Secrets never leave the tracer: trace --json, record, report, report --json and export against a
real redis-server with requirepass, while a client authenticates and changes passwords.

Every stdout and stderr byte of every command, every byte of every file (as stored, and the
records once decompressed) is searched for the passwords. Values are masked unless --show-values;
keys are shown.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat

import pytest

from reliability_util import call, cli, connect, read_some
from tracer_proc import TracerProcess, json_lines

from tracer.tracefile.recording import TraceReader
from tracer.kernel.redis_client import redis_connection

pytestmark = pytest.mark.bpf

PW = b"Pw1-requirepass-q7Zx"          # requirepass: AUTH and HELLO ... AUTH
PW2 = b"Pw2-masterauth-k3Vb"          # CONFIG SET masterauth
PW3 = b"Pw3-aclsetuser-m8Rt"          # ACL SETUSER bob on >PW3
PW4 = b"Pw4-removed-echoed-t5Yw"      # ACL SETUSER bob <PW4: Redis echoes the rule in its error
PW5 = b"Pw5-migrate-auth-c2Nd"        # MIGRATE ... AUTH PW5 (fails: nothing listens there)
PW6 = b"Pw6-migrate-auth2-h9Lp"       # MIGRATE ... AUTH2 user PW6
PASSWORDS = (PW, PW2, PW3, PW4, PW5, PW6)
KEY = b"secret-test-key-4411"
VALUE = b"Value-visible-only-with-show-values-8812"


def client_session(port: int) -> None:
    s = connect(port)
    assert call(s, "AUTH", PW) == b"+OK\r\n"
    hello = call(s, "HELLO", "3", "AUTH", "default", PW)
    assert hello.startswith(b"%"), hello
    assert call(s, "CONFIG", "SET", "masterauth", PW2) == b"+OK\r\n"
    assert call(s, "ACL", "SETUSER", "bob", "on", b">" + PW3, "~*", "+@all") == b"+OK\r\n"
    echoed = call(s, "ACL", "SETUSER", "bob", b"<" + PW4)
    assert PW4 in echoed, echoed     # the server really sends the secret back
    got = call(s, "CONFIG", "GET", "masterauth")
    assert PW2 in got, got            # ... and this reply holds one too
    call(s, "MIGRATE", "127.0.0.1", "1", KEY, "0", "100", "AUTH", PW5)
    call(s, "MIGRATE", "127.0.0.1", "1", KEY, "0", "100", "AUTH2", "bob", PW6)
    assert call(s, "SET", KEY, VALUE) == b"+OK\r\n"
    assert VALUE in call(s, "GET", KEY)
    s.close()
    inline = connect(port)           # the same secrets sent as inline commands
    inline.sendall(b"AUTH " + PW + b"\r\n")
    assert inline.recv(100) == b"+OK\r\n"
    inline.sendall(b"CONFIG SET masterauth " + PW2 + b"\r\n")
    assert inline.recv(100) == b"+OK\r\n"
    inline.close()


def record_bytes(path) -> bytes:
    with TraceReader(path) as r:
        return b"".join(r.records())


def test_secrets_redacted_everywhere_values_only_with_show_values(redis_factory, tmp_path):
    server = redis_factory(requirepass=PW.decode())
    port = str(server.port)
    plain = tmp_path / "plain.rtrace"
    shown = tmp_path / "shown.rtrace"
    tracers = {
        "trace": TracerProcess("trace", "--port", port, "--json"),
        "trace-sv": TracerProcess("trace", "--port", port, "--json", "--show-values"),
        "trace-text": TracerProcess("trace", "--port", port, "--show-values"),
        # the tracer's own query before attaching authenticates with REDISCLI_AUTH / --password
        "record": TracerProcess("record", "--port", port, "-o", str(plain), "--json-out",
                                str(tmp_path / "live.json"), env={"REDISCLI_AUTH": PW.decode()}),
        "record-sv": TracerProcess("record", "--port", port, "-o", str(shown), "--show-values",
                                   "--password", PW.decode()),
    }
    client_session(server.port)
    outputs: dict[str, bytes] = {}
    for name, t in tracers.items():
        rc, out = t.stop()
        assert rc == 0, (name, t.stderr_text())
        outputs[name + ".stdout"] = out.encode()
        outputs[name + ".stderr"] = t.stderr_text().encode()

    for path in (plain, shown):
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        for args in (["report", str(path)], ["report", str(path), "--json"],
                     ["export", str(path), "-o", str(path) + ".chrome.json"]):
            proc = cli(*args)
            assert proc.returncode == 0, proc.stderr
            outputs[" ".join(args) + ".stdout"] = proc.stdout
            outputs[" ".join(args) + ".stderr"] = proc.stderr
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    for p in tmp_path.iterdir():        # trace files, exports and --json-out: owner-only
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    files["plain.records"] = record_bytes(plain)
    files["shown.records"] = record_bytes(shown)
    assert len(files) >= 7

    everything = {**outputs, **files}
    for name, data in everything.items():
        for pw in PASSWORDS:
            assert pw not in data, f"{pw!r} leaked in {name}"
    # values: nowhere without --show-values; in the --show-values recording with it
    for name, data in everything.items():
        if name not in ("shown.records", "shown.rtrace"):
            assert VALUE not in data, f"value leaked in {name}"
    assert VALUE in files["shown.records"]
    # keys are shown: in every trace output, the reports, and the records
    sets = [r for r in json_lines(outputs["trace.stdout"].decode()) if r["command"] == "SET"]
    assert [r["key"] for r in sets] == [KEY.decode()]
    assert KEY in outputs["trace-text.stdout"] and KEY in outputs["trace-sv.stdout"]
    assert KEY in files["plain.records"]
    # without credentials: one line saying how to pass them, and the trace goes on
    assert b"did not say its version and config (NOAUTH: it wants a password; tracing works without): set REDISCLI_AUTH=" \
        in outputs["trace.stderr"]
    report = json.loads(outputs[f"report {plain} --json.stdout"])
    assert report["target"]["redis_version"].startswith("7.")     # the authenticated query answered
    assert json.loads(outputs[f"report {shown} --json.stdout"])["target"]["redis_version"].startswith("7.")
    for name in ("AUTH", "HELLO", "CONFIG SET", "ACL SETUSER", "MIGRATE", "SET", "GET", "CONFIG GET"):
        # the default (engine) mode counts a container command under its name: CONFIG, ACL
        assert report["commands"].get(name, report["commands"].get(name.split()[0], {})).get("count", 0) >= 1, name
    # the secret-bearing commands were traced (so the test looked at them), masked in place
    trace_cmds = {r["command"] for r in json_lines(outputs["trace.stdout"].decode())}
    # the default (engine) mode sends no bytes of AUTH/HELLO/ACL/CONFIG/MIGRATE, so names them without
    # their subcommand (ACL), unless their bytes went up raw (an inline CONFIG SET)
    assert all(name in trace_cmds or name.split()[0] in trace_cmds
               for name in ("AUTH", "HELLO", "CONFIG SET", "ACL SETUSER", "MIGRATE")), trace_cmds
    assert files["plain.records"].count(b"*" * len(PW3)) >= 1


# rename-command CONFIG/ACL: names the command table does not know, the same secrets
RPW = b"Rpw1-requirepass-renamed-a4Kd"
RPW2 = b"Rpw2-masterauth-renamed-p6Xs"
RUSER = b"Rusr3-masteruser-renamed-w2Qe"
RPW4 = b"Rpw4-aclsetuser-renamed-j8Mn"
RPW5 = b"Rpw5-removed-echoed-renamed-z1Tc"
RHASH = hashlib.sha256(b"Rpw6-hash-renamed-b5Gh").hexdigest().encode()    # ACL SETUSER #<sha256>
RENAMED_SECRETS = (RPW, RPW2, RUSER, RPW4, RPW5, RHASH, hashlib.sha256(RPW4).hexdigest().encode())


def renamed_session(port: int, cfg: str, acl: str) -> None:
    s = connect(port)
    assert call(s, cfg, "SET", "masterauth", RPW2) == b"+OK\r\n"
    assert call(s, cfg, "set", "maxmemory", "0", "masteruser", RUSER) == b"+OK\r\n"
    assert RPW2 in call(s, cfg, "GET", "masterauth")          # the reply holds the secret
    assert RUSER in call(s, cfg, "GET", "master*")
    assert call(s, acl, "SETUSER", "rob", "on", b">" + RPW4, b"#" + RHASH, "~*", "+@all") == b"+OK\r\n"
    assert RPW5 in call(s, acl, "SETUSER", "rob", b"<" + RPW5)  # Redis echoes the rule in its error
    assert RHASH in call(s, acl, "GETUSER", "rob")              # password hashes in the reply
    assert RHASH in call(s, acl, "LIST")
    assert call(s, acl, "SETUSER", "rob", b"!" + RHASH) == b"+OK\r\n"
    assert call(s, cfg, "SET", "requirepass", RPW) == b"+OK\r\n"
    assert call(s, "AUTH", RPW) == b"+OK\r\n"
    assert call(s, "SET", KEY, VALUE) == b"+OK\r\n"
    s.sendall(cfg.encode() + b" SET masterauth " + RPW2 + b"\r\n")   # inline
    assert read_some(s) == b"+OK\r\n"
    s.close()


def test_secrets_through_renamed_config_and_acl_are_masked(redis_factory, tmp_path):
    cfg, acl = f"cfg_{secrets.token_hex(4)}", f"acl_{secrets.token_hex(4)}"
    server = redis_factory(rename_command=[f"CONFIG {cfg}", f"ACL {acl}"])
    port = str(server.port)
    shown, plain = tmp_path / "shown.rtrace", tmp_path / "plain.rtrace"
    tracers = {
        "trace-sv": TracerProcess("trace", "--port", port, "--json", "--show-values"),
        "record-sv": TracerProcess("record", "--port", port, "-o", str(shown), "--show-values"),
        "record": TracerProcess("record", "--port", port, "-o", str(plain)),
    }
    # the tracers' own query before attaching did not call the renamed CONFIG: no error reply
    with redis_connection(server.port) as query:
        assert "errorstat_" not in query("INFO", "errorstats")
    renamed_session(server.port, cfg, acl)
    outputs: dict[str, bytes] = {}
    for name, t in tracers.items():
        rc, out = t.stop()
        assert rc == 0, (name, t.stderr_text())
        outputs[name + ".stdout"], outputs[name + ".stderr"] = out.encode(), t.stderr_text().encode()
    for path in (shown, plain):
        for args in (["report", str(path)], ["report", str(path), "--json"],
                     ["export", str(path), "-o", str(path) + ".chrome.json"]):
            proc = cli(*args)
            assert proc.returncode == 0, proc.stderr
            outputs[" ".join(args)] = proc.stdout + proc.stderr
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    files["shown.records"], files["plain.records"] = record_bytes(shown), record_bytes(plain)

    for name, data in {**outputs, **files}.items():
        for pw in RENAMED_SECRETS:
            assert pw not in data, f"{pw!r} leaked in {name}"
    # the test looked at the renamed commands: traced under their new names, with the subcommand
    traced = {r["command"] for r in json_lines(outputs["trace-sv.stdout"].decode())}
    assert {f"{cfg.upper()} SET", f"{cfg.upper()} GET", f"{acl.upper()} SETUSER", f"{acl.upper()} GETUSER",
            f"{acl.upper()} LIST", "AUTH", "SET"} <= traced, traced
    # masked in place, lengths kept; values still recorded with --show-values
    assert files["shown.records"].count(b"*" * len(RPW2)) >= 2
    assert VALUE in files["shown.records"] and VALUE not in files["plain.records"]
    assert b"masterauth" in files["shown.records"]      # parameter names stay visible
