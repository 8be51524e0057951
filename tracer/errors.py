"""Errors the CLI turns into one clear line and a non-zero exit, never a traceback."""


class TracerError(Exception):
    """A user-facing failure: str(err) is the whole message, `fix` says what to do."""

    exit_code = 2

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.fix = fix

    def line(self) -> str:
        msg = str(self)
        return f"{msg} (fix: {self.fix})" if self.fix else msg


class PrivilegeError(TracerError):
    exit_code = 77


class BPFUnavailable(TracerError):
    exit_code = 78


class Interrupted(TracerError):
    """Ctrl-C before anything was traced: one line, and the shell's 128 + SIGINT."""

    exit_code = 130
