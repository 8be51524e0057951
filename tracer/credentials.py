"""How the tracer reaches and authenticates with the target redis-server: the options, defined once.

The password comes from the REDISCLI_AUTH environment variable (as with redis-cli: it stays out
of `ps` and of shell history) or from --password; --user names an ACL user (without it, the
default user). --tls (with --tls-ca/--tls-cert/--tls-key) speaks TLS to a server that only
listens with tls-port; --socket PATH talks to the server's unix socket instead of a TCP port.
Every place that talks to the target (the tracing commands' query before attaching, the INFO
sampler, doctor) goes through tracer/kernel/redis_client.py with these.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from tracer.errors import UsageError

ENV_PASSWORD = "REDISCLI_AUTH"
# the one line that says how to pass credentials (doctor prints it on NOAUTH)
HOW_TO_AUTHENTICATE = f"set {ENV_PASSWORD}=<password> (or pass --password; add --user NAME for an ACL user)"


@dataclass(frozen=True)
class TlsOptions:
    """TLS to the target: the CA that signed its certificate, and a client certificate when the
    server asks for one (tls-auth-clients). verify=False only with an explicit --tls-skip-verify."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class Credentials:
    user: str | None = None
    password: str | None = field(default=None, repr=False)   # never in a repr or a traceback
    tls: TlsOptions | None = None       # None: plain TCP
    socket: str | None = None           # the server's unix socket path, instead of its TCP port

    def auth_args(self) -> tuple[str, ...] | None:
        """The AUTH command to send first, or None without a password. Always the two-argument
        form (Redis 6+), naming "default" when no user is given: a server whose default user has
        no password accepts it without an error, where `AUTH <password>` alone would be refused
        ("called without any password configured") and counted in its error statistics."""
        if self.password is None:
            return None
        return ("AUTH", self.user or "default", self.password)


NO_CREDENTIALS = Credentials()


def explain_refusal(why: str, credentials: Credentials) -> tuple[str, str] | None:
    """(what the server did, the fix) for an authentication or permission refusal, in one line each;
    None for any other failure."""
    user = credentials.user or "default"
    if why.startswith("NOAUTH"):
        return "wants a password", HOW_TO_AUTHENTICATE
    if why.startswith("WRONGPASS") or "invalid password" in why or "invalid username-password" in why:
        return (f"refused the password for user {user} (wrong password, unknown or disabled user)",
                f"check {ENV_PASSWORD} or --password, and --user")
    if why.startswith("NOPERM"):
        return (f"ACL user {user} lacks a permission the tracer needs ({why})",
                f"grant it: ACL SETUSER {user} +ping +info +command|info +command|list +config|get")
    if "without any password configured" in why:
        return "has no password set, but one was given", f"unset {ENV_PASSWORD} and drop --password"
    return None


def add_credential_args(parser) -> None:
    parser.add_argument("--user", metavar="NAME",
                        help="ACL user to authenticate as when querying Redis (needs a password)")
    parser.add_argument("--password", metavar="PASSWORD",
                        help=f"password to query a protected Redis; prefer the {ENV_PASSWORD} environment "
                             "variable, which keeps it out of `ps`")
    parser.add_argument("--socket", metavar="PATH",
                        help="query Redis over this unix socket (and trace the redis-server listening on it "
                             "when no --pid/--port is given)")
    parser.add_argument("--tls", action="store_true", help="query Redis over TLS (a server with tls-port)")
    parser.add_argument("--tls-ca", metavar="FILE", help="CA certificate that signed the server's (implies --tls)")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="client certificate, for a server with tls-auth-clients (implies --tls)")
    parser.add_argument("--tls-key", metavar="FILE", help="the client certificate's private key")
    parser.add_argument("--tls-skip-verify", action="store_true",
                        help="do not verify the server's certificate (only for tests; implies --tls)")


def _tls_from_args(args) -> TlsOptions | None:
    ca, cert, key = (getattr(args, name, None) for name in ("tls_ca", "tls_cert", "tls_key"))
    skip = bool(getattr(args, "tls_skip_verify", False))
    if not (getattr(args, "tls", False) or ca or cert or key or skip):
        return None
    if bool(cert) != bool(key):
        raise UsageError("--tls-cert and --tls-key go together", "pass both, or neither")
    for flag, path in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)):
        if path and not os.path.isfile(path):
            raise UsageError(f"{flag} {path}: no such file")
    return TlsOptions(ca=ca, cert=cert, key=key, verify=not skip)


def credentials_from_args(args, environ=None) -> Credentials:
    environ = os.environ if environ is None else environ
    password = getattr(args, "password", None)
    if password is None:
        password = environ.get(ENV_PASSWORD) or None
    user = getattr(args, "user", None) or None
    if user and password is None:
        raise UsageError(f"--user {user} needs a password", HOW_TO_AUTHENTICATE)
    socket_path = getattr(args, "socket", None) or None
    tls = _tls_from_args(args)
    if socket_path and tls is not None:
        raise UsageError("--socket and --tls do not go together", "Redis speaks TLS on its tls-port only")
    return Credentials(user, password, tls, socket_path)
