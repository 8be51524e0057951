"""The sched probes' records completed at the drain (probes/sched.c, flag SCF_ANNOTATE).

An OFFCPU record's kernel stack is an id into the `kstacks` map: here it becomes its frames, folded
(root first, `;`-separated, Brendan Gregg's format) and symbolized with /proc/kallsyms through bcc. A
FORK record gets the target's RSS at that moment and the child's command line (Redis names its
children: "redis-rdb-bgsave", "redis-aof-rewrite", "redis-rdb-to-slaves"). Both go into the record,
so a recording replays what live mode saw.
"""
from __future__ import annotations

import os

from tracer.kernel import events

STACK_FRAMES_MAX = 32       # frames kept of a kernel stack (the innermost)
STACKS_CACHED = 512         # symbolized stacks kept; beyond, the kernel map and the cache start over
CMDLINE_MAX = 128
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int, proc: str = "/proc") -> int:
    """Resident set size of a process now (0 when it is gone)."""
    try:
        with open(f"{proc}/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def cmdline(pid: int, proc: str = "/proc") -> str:
    """A process's command line, arguments space-separated (empty when it is gone)."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            raw = f.read(CMDLINE_MAX)
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


class SchedAnnotator:
    """Completes the records flagged SCF_ANNOTATE; `bpf` is the loaded probe set holding `kstacks`."""

    def __init__(self, bpf, proc: str = "/proc"):
        self.bpf = bpf
        self.proc = proc
        self.stacks: dict[int, str] = {}

    def annotate(self, raw: bytes) -> bytes:
        ev = events.decode(raw)
        ev.flags &= ~events.SCF_ANNOTATE
        if ev.kind == events.OFFCPU and ev.flags & events.SCF_STACK:
            ev.payload = self.folded(ev.aux_ts2).encode()
        elif ev.kind == events.FORK:
            ev.aux_ts2 = rss_bytes(ev.tgid, self.proc)
            ev.payload = cmdline(ev.ret, self.proc).encode()
        return events.encode(ev)

    def folded(self, stack_id: int) -> str:
        text = self.stacks.get(stack_id)
        if text is not None:
            return text
        table = self.bpf["kstacks"]
        try:
            addrs = list(table.walk(stack_id))[:STACK_FRAMES_MAX]
        except (KeyError, OSError):
            addrs = []
        names = [self.bpf.ksym(a, show_module=False, show_offset=False).decode("utf-8", "replace")
                 for a in addrs]
        text = ";".join(reversed(names))
        if len(self.stacks) >= STACKS_CACHED:
            self.stacks.clear()
            table.clear()
        self.stacks[stack_id] = text
        return text
