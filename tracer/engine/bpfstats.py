"""The kernel's own run-time accounting of BPF programs (what `kernel.bpf_stats_enabled` turns on):
enabled for as long as a BPF_ENABLE_STATS fd is open (no sysctl left behind), read per program
from /proc/self/fdinfo of its fd (run_time_ns, run_cnt)."""
from __future__ import annotations

import ctypes
import os
import platform

_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0


def enable_stats() -> int | None:
    """An fd that keeps run-time stats on until closed; None when the kernel refuses."""
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 4)(_BPF_STATS_RUN_TIME)
    fd = libc.syscall(nr, _BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    return fd if fd >= 0 else None


def prog_stats(prog_fds: dict) -> dict:
    """name -> {"run_cnt", "run_time_ns"} for BPF program fds of this process."""
    out = {}
    for name, fd in prog_fds.items():
        fields = {}
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("run_time_ns", "run_cnt"):
                        fields[key] = int(value)
        except (OSError, ValueError):
            continue
        if fields:
            out[name] = fields
    return out


def close_stats(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
