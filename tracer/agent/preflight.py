"""What the agent checks before it serves anything, so a unit missing a capability fails in one line
instead of retrying a compile that cannot succeed (and logging kilobytes of clang errors each time)."""
from __future__ import annotations

import os

from tracer.errors import PrivilegeError
from tracer.kernel.doctor import TRACEFS_CANDIDATES
from tracer.kernel.privileges import require_tracing_privileges

# bcc builds each tracepoint's argument struct from its format file: one the probes use
FORMAT = "events/syscalls/sys_enter_read/format"


def tracefs_readable(candidates=TRACEFS_CANDIDATES) -> str | None:
    """None when a tracepoint format can be read, else why not."""
    mounted = [root for root in candidates if os.path.isdir(root)]
    for root in mounted:
        try:        # opened, not access(): access() checks the real uid without the capabilities
            with open(os.path.join(root, FORMAT), "rb") as f:
                f.read(1)
            return None
        except OSError:
            pass
    if not mounted:
        return "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)"
    return (f"cannot read {os.path.join(mounted[0], FORMAT)} (tracefs is mode 0700): a non-root agent needs "
            "CAP_DAC_READ_SEARCH (docs/SECURITY.md)")


def require_agent_privileges() -> None:
    require_tracing_privileges()
    why = tracefs_readable()
    if why:
        raise PrivilegeError(f"the probes cannot be compiled: {why}")
