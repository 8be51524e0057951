"""What the sched probes saw (probes/sched.c), as the stitcher hands it on: a main thread off its CPU,
a task that ran while it waited, a fork. Timestamps are CLOCK_MONOTONIC ns like the rest of the model."""
from __future__ import annotations

from dataclasses import dataclass

from tracer.kernel import events

TASK_STATE_MASK = 0xFF      # prev_state bits; 0 = runnable (preempted), see probes/sched.c
# prev_state letters, as the kernel prints them
STATE_NAMES = {0x1: "sleeping (S)", 0x2: "uninterruptible (D)", 0x4: "stopped (T)", 0x8: "traced (t)",
               0x10: "dead (X)", 0x20: "zombie (Z)", 0x40: "parked (P)", 0x80: "idle (I)"}


@dataclass(frozen=True, slots=True)
class OffCpu:
    """The main thread away from its CPU from out_ts to in_ts: runnable from runnable_ts on (0: never
    runnable before in_ts was reached through a wake-up we did not see)."""

    tgid: int
    out_ts: int
    in_ts: int
    wake_ts: int            # woken after a sleep (0: preempted, runnable from out_ts)
    state: int              # prev_state at the switch-out
    in_epoll: bool          # it left inside epoll_wait (idle until woken)
    stack: str              # kernel stack at the switch-out, folded root first ("" unknown)

    @property
    def preempted(self) -> bool:
        return not self.state & TASK_STATE_MASK

    @property
    def runnable_ts(self) -> int:
        return self.out_ts if self.preempted else self.wake_ts

    @property
    def runnable_ns(self) -> int:
        """Time it could have run but had no CPU."""
        start = self.runnable_ts
        return max(0, self.in_ts - start) if start else 0

    @property
    def blocked_end_ts(self) -> int:
        """End of its sleep: the wake-up, else the switch-in."""
        return self.wake_ts or self.in_ts

    @property
    def state_name(self) -> str:
        bits = self.state & TASK_STATE_MASK
        return next((name for bit, name in STATE_NAMES.items() if bits & bit), "runnable (R)")


@dataclass(frozen=True, slots=True)
class RunSlice:
    """Another task ran on the CPU the main thread of tgid waited for, from start_ts to end_ts."""

    tgid: int
    start_ts: int
    end_ts: int
    pid: int                # the task's process (tgid)
    tid: int
    comm: str
    cpu: int


@dataclass(frozen=True, slots=True)
class Fork:
    """A fork by the target (not a thread): entered at start_ts (0 unknown), child made at end_ts."""

    tgid: int
    start_ts: int
    end_ts: int
    child: int
    rss_bytes: int          # the target's RSS at the drain after the fork (0 unknown)
    child_cmdline: str      # "redis-rdb-bgsave ..." when the child was still there to ask

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ts - self.start_ts) if self.start_ts else 0


def _text(payload: bytes) -> str:
    return bytes(payload).split(b"\0", 1)[0].decode("utf-8", "replace")


def sched_item(ev: events.Event):
    """The model object of an OFFCPU, RUNQ or FORK record."""
    if ev.kind == events.OFFCPU:
        return OffCpu(ev.tgid, ev.ts_enter, ev.ts_exit, ev.aux_ts, ev.ret, bool(ev.flags & events.SCF_IN_EPOLL),
                      _text(ev.payload) if ev.flags & events.SCF_STACK else "")
    if ev.kind == events.RUNQ:
        return RunSlice(ev.tgid, ev.ts_enter, ev.ts_exit, ev.ret, ev.aux_ts, _text(ev.payload[:16]), ev.fd)
    return Fork(ev.tgid, ev.ts_enter, ev.ts_exit, ev.ret, ev.aux_ts2, _text(ev.payload))
