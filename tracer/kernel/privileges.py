"""Whether this process may load BPF programs and open tracepoints.

Root normally holds every capability, but a container can run as uid 0 with a
reduced set, so the effective capability mask is what decides, not the uid.
"""
from __future__ import annotations

import os
import shlex
import sys

from tracer.errors import PrivilegeError

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def read_cap_eff(status_path: str = "/proc/self/status") -> int:
    """The CapEff mask of /proc/<pid>/status (0 when it cannot be read)."""
    try:
        with open(status_path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def has_cap(mask: int, cap: int) -> bool:
    return bool(mask >> cap & 1)


def sudo_fix(argv: list[str] | None = None) -> str:
    """`run as root: sudo <the command the user typed>`."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = os.path.basename(argv[0]) or argv[0]
        if argv[0] in ("__main__.py", "cli.py"):   # python -m tracer
            argv[0] = "redis-tracer"
    command = " ".join(shlex.quote(a) for a in argv) or "redis-tracer"
    return f"run as root: sudo {command}"


def privilege_fix(euid: int, argv: list[str] | None = None) -> str:
    if euid == 0:  # root already: only a container's capability set can be short
        return (f"{sudo_fix(argv)} on the host, or start the container with --privileged "
                "(or --cap-add BPF --cap-add PERFMON)")
    return sudo_fix(argv)


def missing_privileges(euid: int | None = None, cap_eff: int | None = None) -> str | None:
    """None when tracing is allowed, else one line naming what is missing."""
    euid = os.geteuid() if euid is None else euid
    cap_eff = read_cap_eff() if cap_eff is None else cap_eff
    # Kernels before 5.8 have no CAP_BPF/CAP_PERFMON: CAP_SYS_ADMIN covers both there and here.
    if has_cap(cap_eff, CAP_SYS_ADMIN):
        return None
    if has_cap(cap_eff, CAP_BPF) and has_cap(cap_eff, CAP_PERFMON):
        return None
    lacking = [name for name, cap in (("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON))
               if not has_cap(cap_eff, cap)]
    who = "running as root" if euid == 0 else f"not root (uid {euid})"
    return f"{who}, and CapEff {cap_eff:#x} lacks {'+'.join(lacking)}"


def require_tracing_privileges(argv: list[str] | None = None, euid: int | None = None,
                               cap_eff: int | None = None) -> None:
    """Raise PrivilegeError (one line plus the fix) unless BPF tracing is allowed."""
    euid = os.geteuid() if euid is None else euid
    missing = missing_privileges(euid, cap_eff)
    if missing:
        raise PrivilegeError(f"tracing needs root or CAP_BPF+CAP_PERFMON: {missing}", privilege_fix(euid, argv))
