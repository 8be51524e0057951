"""What a stall's main thread ran, from its on-CPU samples (unless --no-why; kernel/stacks.py makes them).

Three answers for diagnosis.py:
* hot paths: the call tree of the samples (event-loop frames left out), descended from each
  heavy branch while one child keeps HOT_SHARE of it: `activeExpireCycle → … → dictRelease 92 %`;
* the class the thread's work implies: `expiry` (active or on-access expiry freeing keys) or
  `eviction` (maxmemory), when their frames hold at least CLASS_SHARE of the samples;
* whether the commands ran the span: a command is a culprit only when samples under `call()`
  (command execution) hold CLASS_SHARE of them. An inferred execution time is only the time from
  a read to the next syscall, and swallows whatever the loop did after the command (serverCron,
  beforeSleep): a GET read just before an expiry cycle is a victim, not the culprit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tracer.analyze.classify import CLASS_SHARE
from tracer.analyze.culprits import Culprits, Unit
from tracer.schema import StallFrames
from tracer.units import say_pct

MIN_SAMPLES = 5             # fewer samples decide nothing (a stall just over the threshold gets ~20)
HOT_SHARE = 0.6             # a hot path goes on into a child holding this share of its branch
BRANCH_MIN_SHARE = 0.05     # branches lighter than this are not listed
MAX_PATHS = 3
FOLDED_KEPT = 200           # folded lines kept per stall in the report (the heaviest)
MAX_KEYS = 3                # expired keys named in the evidence
CALL_FRAME = "call"         # server.c call(): a command executing
# the event loop and its dispatch: where every stack starts, so they explain nothing
LOOP_FRAMES = frozenset({
    "_start", "__libc_start_main", "__libc_start_call_main", "main", "aeMain", "aeProcessEvents",
    "processTimeEvents", "serverCron", "databasesCron", "beforeSleep", "afterSleep", "readQueryFromClient",
    "processInputBuffer", "processCommandAndResetClient", "processCommand", "connSocketEventHandler",
    "callHandler", CALL_FRAME, "[unknown]", "[other]",
})
CLASS_FRAMES = {
    "expiry": frozenset({"activeExpireCycle", "activeExpireCycleTryExpire", "deleteExpiredKeyAndPropagate",
                         "expireSlaveKeys"}),
    "eviction": frozenset({"performEvictions", "evictionTimeProc"}),
}
CPU_CLASSES = tuple(CLASS_FRAMES)
# a stack holding one of these was unwound far enough to say where in Redis it was
PLACING_FRAMES = frozenset({"main", "aeMain", CALL_FRAME}).union(*CLASS_FRAMES.values())


@dataclass(slots=True)
class CpuFacts:
    samples: int
    call_share: float                   # samples under call(): command execution
    class_shares: dict                  # "expiry"/"eviction" -> share of the samples
    paths: list = field(default_factory=list)   # [StallFrames]
    folded: list = field(default_factory=list)  # "root;...;leaf count", heaviest first
    on_cpu_share: float | None = None   # the share of the sampled span the thread was on a CPU
    placed: int = 0                     # samples whose stack says where in Redis they were (the shares' base)

    @property
    def decides(self) -> bool:
        return self.placed >= MIN_SAMPLES

    @property
    def cls(self) -> str | None:
        """expiry/eviction when the thread's work was that, else None."""
        best = max(CPU_CLASSES, key=lambda c: self.class_shares[c])
        return best if self.decides and self.class_shares[best] >= CLASS_SHARE else None

    @property
    def commands_ran_it(self) -> bool:
        return not self.decides or self.call_share >= CLASS_SHARE


def cpu_facts(folded: dict, samples: int, on_cpu_share: float | None = None) -> CpuFacts:
    """folded: "root;...;leaf" -> samples (kernel.stacks.StacksAt.folded); on_cpu_share: samples over
    those a thread running throughout would have given."""
    in_call = placed = 0
    per_class = {c: 0 for c in CPU_CLASSES}
    for stack, n in folded.items():
        frames = set(stack.split(";"))
        # A sample taken in the kernel keeps only its user leaf, and an unwind can stop early: such
        # a stack cannot say whether a command ran, so it is left out of the shares, not counted
        # as "not a command" (a DEL whose frees end in madvise would lose its culprit otherwise).
        if not frames & PLACING_FRAMES:
            continue
        placed += n
        if CALL_FRAME in frames:
            in_call += n
        for cls, marks in CLASS_FRAMES.items():
            if frames & marks:
                per_class[cls] += n
    base = placed or 1
    lines = sorted(folded.items(), key=lambda kv: (-kv[1], kv[0]))[:FOLDED_KEPT]
    return CpuFacts(samples=samples if samples or not folded else sum(folded.values()), call_share=in_call / base,
                    class_shares={c: n / base for c, n in per_class.items()}, paths=hot_paths(folded),
                    folded=[f"{stack} {n}" for stack, n in lines], on_cpu_share=on_cpu_share, placed=placed)


def shown_frames(stack: str) -> list[str]:
    """A stack's frames an operator reads: the event loop's and unnamed ones left out."""
    return [f for f in stack.split(";") if f not in LOOP_FRAMES and "+0x" not in f]


def hot_paths(folded: dict) -> list[StallFrames]:
    """The heaviest branches of the samples' call tree, each followed down while one child holds
    HOT_SHARE of it; the share is of all samples, under the path's last frame."""
    total = sum(folded.values())
    if not total:
        return []
    tree: dict = {}         # frame -> [count, children]
    for stack, n in folded.items():
        level = tree
        for frame in shown_frames(stack):
            node = level.setdefault(frame, [0, {}])
            node[0] += n
            level = node[1]
    out = []
    for frame, node in sorted(tree.items(), key=lambda kv: (-kv[1][0], kv[0]))[:MAX_PATHS]:
        if node[0] < BRANCH_MIN_SHARE * total:
            break
        path, branch = [frame], node[0]
        while node[1]:
            name, child = max(node[1].items(), key=lambda kv: (kv[1][0], kv[0]))
            if child[0] < HOT_SHARE * branch:
                break
            path.append(name)
            node = child
        out.append(StallFrames(frames=path, share=round(node[0] / total, 3), samples=node[0]))
    return out


@dataclass(slots=True)
class _SpanWork:
    """The span itself as an execution, for victims: requests waiting in it waited on its work."""

    exec_start_ts: int
    exec_end_ts: int


def span_work(start: int, end: int) -> list[Unit]:
    """The span's own work as a unit, for victims: requests waiting in the span waited on it."""
    return [Unit(conn=0, order=0, members=[_SpanWork(start, end)], exec_ns=end - start, timed=True)]


def without_culprits(culprits: Culprits) -> Culprits:
    return Culprits(conns=set(), units=[], timed_any=culprits.timed_any)


def _keys_sentence(how: str, deleted_keys) -> str:
    keys = list(dict.fromkeys(str(k) for k in deleted_keys))
    more = f" (+{len(keys) - MAX_KEYS} more)" if len(keys) > MAX_KEYS else ""
    return (f"{how} key{'s' if len(keys) > 1 else ''}: {', '.join(repr(k) for k in keys[:MAX_KEYS])}{more}"
            " (the DEL Redis sent its replicas)")


def evidence(cpu: CpuFacts, cls: str, inferred: object, deleted_keys=()) -> tuple[list[str], list[str]]:
    """(what the class rests on and the command the samples cleared, to go first; the hot paths and
    how much the thread ran, to go after the class's own words). deleted_keys: keys the master sent
    its replicas DEL/UNLINK for in or right after the span."""
    first, after = [], []
    if cls == "expiry":
        first.append(f"the main thread was expiring keys ({say_pct(cpu.class_shares['expiry'], 1)} of"
                     f" {cpu.samples} on-CPU samples in activeExpireCycle/deleteExpiredKeyAndPropagate)")
        if deleted_keys:
            first.append(_keys_sentence("expired", deleted_keys))
        else:
            first.append("the expired key is not visible: Redis propagates it as a DEL to the AOF (whose bytes are"
                         " never captured) and to replicas (none traced)")
    elif cls == "eviction":
        first.append(f"the main thread was evicting keys for maxmemory ({say_pct(cpu.class_shares['eviction'], 1)}"
                     f" of {cpu.samples} on-CPU samples in performEvictions)")
        if deleted_keys:
            first.append(_keys_sentence("evicted", deleted_keys))
    if inferred is not None and not cpu.commands_ran_it:
        name = (getattr(inferred, "command", None) or "?").upper()
        first.append(f"{name} is not the culprit: only {say_pct(cpu.call_share, 1)} of the samples ran a command"
                     " (its execution time was inferred up to the next syscall)")
    for p in cpu.paths:
        after.append(f"on CPU: {p.describe()}")
    if not cpu.samples:
        after.append("no on-CPU sample in the span: the main thread was off the CPU (waiting or preempted),"
                     " not running Redis code")
    elif cpu.on_cpu_share is not None:
        after.append(f"{cpu.samples} on-CPU samples: the main thread ran about {say_pct(cpu.on_cpu_share, 1)}"
                     " of the span")
    if cpu.samples and cpu.placed < cpu.samples:
        after.append(f"{cpu.samples - cpu.placed} samples in the kernel or not unwound to the event loop:"
                     " left out of the shares above")
    return first, after
