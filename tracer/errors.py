"""Errors the CLI turns into one clear line and a non-zero exit, never a traceback.

Exit codes (EXIT_CODES, listed in every --help): 0 success, 1 a runtime failure (TracerError),
2 a usage error (UsageError, and argparse's own), 3 a --fail-on-* gate that tripped, 77 missing
privileges, 78 BPF unavailable, 130 interrupted.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_GATE = 3
EXIT_PRIVILEGES = 77
EXIT_NO_BPF = 78
EXIT_INTERRUPTED = 130

EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_FAILURE, "runtime failure (no such target, unreadable trace file, disk full, ...)"),
    (EXIT_USAGE, "usage error (unknown option, invalid value)"),
    (EXIT_GATE, "--fail-on-lost or --fail-on-stall was met (the output is complete)"),
    (EXIT_PRIVILEGES, "missing privileges (root or CAP_BPF + CAP_PERFMON)"),
    (EXIT_NO_BPF, "BPF unavailable on this kernel"),
    (EXIT_INTERRUPTED, "interrupted before anything was traced"),
)


class TracerError(Exception):
    """A user-facing runtime failure: str(err) is the whole message, `fix` says what to do."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.fix = fix

    def line(self) -> str:
        msg = str(self)
        return f"{msg} (fix: {self.fix})" if self.fix else msg


class UsageError(TracerError):
    """The command line itself is wrong (a value out of range, options that exclude each other)."""

    exit_code = EXIT_USAGE


class PrivilegeError(TracerError):
    exit_code = EXIT_PRIVILEGES


class BPFUnavailable(TracerError):
    exit_code = EXIT_NO_BPF


class Interrupted(TracerError):
    """Ctrl-C before anything was traced: one line, and the shell's 128 + SIGINT."""

    exit_code = EXIT_INTERRUPTED
