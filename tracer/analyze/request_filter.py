"""`trace`'s filters on requests: --min-ms, --command, --client, --key-prefix, applied to every
stitched request (the full path) or every request the engine sent up. In engine mode the kernel
already applies --min-ms (its slow threshold) and --command (an allow-list in the command table),
so these checks only confirm it; --client and --key-prefix are always checked here."""
from __future__ import annotations

from dataclasses import dataclass

from tracer.errors import UsageError


def command_list(text: str) -> tuple[str, ...]:
    """`GET,set, HGET` -> ("GET", "SET", "HGET")."""
    names = tuple(dict.fromkeys(n.strip().upper() for n in text.split(",") if n.strip()))
    if not names or any(not n.replace(" ", "").replace("_", "").replace("-", "").isalnum() for n in names):
        raise UsageError(f"--command takes command names separated by commas (GET,SET), not {text!r}")
    return names


@dataclass(frozen=True, slots=True)
class RequestFilter:
    min_ms: float | None = None
    commands: tuple = ()                # upper-case names; a name also matches its subcommands
    client: str | None = None           # "ip:port", "ip" (any port) or ":port"
    key_prefix: str | None = None

    @property
    def empty(self) -> bool:
        return self.min_ms is None and not self.commands and self.client is None and self.key_prefix is None

    def _client_matches(self, client: str | None) -> bool:
        want = self.client
        if not client:
            return False
        if want.startswith(":"):
            return client.endswith(want)
        return client == want or client.rsplit(":", 1)[0].strip("[]") == want.strip("[]")

    def __call__(self, req) -> bool:
        if self.min_ms is not None:
            latency = req.latency_ns
            if latency is None or latency < self.min_ms * 1e6:
                return False
        if self.commands:
            name = (req.command or "").upper()
            if name not in self.commands and name.split(" ", 1)[0] not in self.commands:
                return False
        if self.client is not None and not self._client_matches(req.client):
            return False
        if self.key_prefix is not None and not (req.key or "").startswith(self.key_prefix):
            return False
        return True
