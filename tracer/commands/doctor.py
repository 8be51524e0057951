"""`redis-tracer doctor`: check that this machine (and optionally a target Redis) can be traced."""
from __future__ import annotations

import json
import sys

from tracer.kernel import doctor
from tracer.credentials import add_credential_args, credentials_from_args


EXAMPLES = """\
  redis-tracer doctor                  # privileges, kernel, bcc: can it trace?
  redis-tracer doctor --port 6379      # ... and that redis-server
  redis-tracer doctor --json | jq .ok"""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "doctor", help="check privileges, kernel and bcc support (and a target) before tracing",
        description="One line per check with the exact fix. Exit 0 only when tracing can work.")
    parser.add_argument("--pid", type=int, help="also check this redis-server process")
    parser.add_argument("--port", type=int, help="also check the redis-server listening on this TCP port")
    parser.add_argument("--json", action="store_true", help='print {"ok": bool, "checks": [...]} instead')
    add_credential_args(parser)
    return parser


def _can_print_unicode(stream) -> bool:
    encoding = getattr(stream, "encoding", None)
    if not encoding:  # an in-memory text stream takes any str
        return True
    try:
        "✓✗".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def run(args, probes=None, out=None) -> int:
    out = out or sys.stdout
    checks = doctor.run_checks(pid=args.pid, port=args.port, probes=probes, credentials=credentials_from_args(args))
    ok = doctor.tracing_ok(checks)
    if args.json:
        json.dump({"ok": ok, "checks": [c.to_json() for c in checks]}, out)
        out.write("\n")
        return 0 if ok else 1
    unicode = _can_print_unicode(out)
    for check in checks:
        print(check.line(unicode), file=out)
    blocking = sum(c.blocking for c in checks)
    warnings = sum(not c.ok and c.level == doctor.WARN for c in checks)
    if ok:
        extra = f" ({warnings} warning{'s' * (warnings != 1)})" if warnings else ""
        print(f"doctor: tracing can work{extra}", file=out)
    else:
        print(f"doctor: {blocking} problem{'s' * (blocking != 1)} to fix before tracing", file=out)
    return 0 if ok else 1
