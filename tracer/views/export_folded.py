"""Folded stacks per stall (`export --format folded`): Brendan Gregg's format, which flamegraph.pl
and speedscope read. One line per distinct stack: frames root first, separated by `;`, a space and
its sample count. Each stall's stacks sit under a root frame naming the stall, so one file holds
every stall's flame graph side by side."""
from __future__ import annotations

from typing import Iterator

from tracer.views.common import longest_first


def stall_root(stall) -> str:
    """The stall's root frame: when, how long, what class (no spaces or `;`, which the format reserves)."""
    return f"stall_at_+{float(stall.start_s):.3f}s_{float(stall.duration_ms):.0f}ms_{stall.class_ or 'unknown'}"


def folded_lines(stalls) -> Iterator[str]:
    """`root;frame;...;leaf count` for every stall that was sampled (on unless --no-why), longest stall first."""
    for stall in longest_first(stalls):
        root = stall_root(stall)
        for line in stall.folded or ():
            stack, _, count = str(line).rpartition(" ")
            if stack and count.isdigit():
                yield f"{root};{stack} {count}"
