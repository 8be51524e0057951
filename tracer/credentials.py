"""Credentials for the commands that query the target redis-server: the options, defined once.

The password comes from the REDISCLI_AUTH environment variable (as with redis-cli: it stays out
of `ps` and of shell history) or from --password; --user names an ACL user (without it, the
default user). Every place that talks to the target (the tracing commands' one query before
attaching, doctor's PING) authenticates with these.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from tracer.errors import UsageError

ENV_PASSWORD = "REDISCLI_AUTH"
# the one line that says how to pass credentials (doctor prints it on NOAUTH)
HOW_TO_AUTHENTICATE = f"set {ENV_PASSWORD}=<password> (or pass --password; add --user NAME for an ACL user)"


@dataclass(frozen=True)
class Credentials:
    user: str | None = None
    password: str | None = field(default=None, repr=False)   # never in a repr or a traceback

    def auth_args(self) -> tuple[str, ...] | None:
        """The AUTH command to send first, or None without a password. Always the two-argument
        form (Redis 6+), naming "default" when no user is given: a server whose default user has
        no password accepts it without an error, where `AUTH <password>` alone would be refused
        ("called without any password configured") and counted in its error statistics."""
        if self.password is None:
            return None
        return ("AUTH", self.user or "default", self.password)


NO_CREDENTIALS = Credentials()


def add_credential_args(parser) -> None:
    parser.add_argument("--user", metavar="NAME",
                        help="ACL user to authenticate as when querying Redis (needs a password)")
    parser.add_argument("--password", metavar="PASSWORD",
                        help=f"password to query a protected Redis; prefer the {ENV_PASSWORD} environment "
                             "variable, which keeps it out of `ps`")


def credentials_from_args(args, environ=None) -> Credentials:
    environ = os.environ if environ is None else environ
    password = getattr(args, "password", None)
    if password is None:
        password = environ.get(ENV_PASSWORD) or None
    user = getattr(args, "user", None) or None
    if user and password is None:
        raise UsageError(f"--user {user} needs a password", HOW_TO_AUTHENTICATE)
    return Credentials(user, password)
