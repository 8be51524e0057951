"""A stall seen from the scheduler (probes/sched.c, --why): what the main thread did while off its CPU.

Facts first (`offcpu_facts`): how much of the span it waited for a CPU and who ran there instead,
how much it slept outside epoll_wait and in which kernel wait, the forks it made, its page faults.
Then the class those facts alone give (`sched_class`), which wins over the class of the commands
inferred in the span (the class comes from what the thread did), the words and the advice.

  fork        a fork by the target covers >= SCHED_SHARE of the span
  cpu-starved the main thread was runnable without a CPU for >= SCHED_SHARE of it
  blocked     it slept in the kernel (not in epoll_wait) for >= SCHED_SHARE of it
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tracer.stitch.sched_items import Fork, OffCpu, RunSlice
from tracer.units import NS_PER_MS, ns_to_ms

SCHED_SHARE = 0.5               # off-CPU facts must explain this share of the span to name its class
CPU_STARVED = "cpu-starved"     # the class of a span the main thread spent waiting for a CPU
WAKE_SLACK_NS = 200_000         # bytes arrive this long at most before the wake-up they cause
COMPETITORS_LISTED = 5
WAITS_LISTED = 3
FRAMES_SHOWN = 4                # innermost kernel frames named in the evidence
# Redis names its forked children (setproctitle): the trigger of a fork
CHILD_TRIGGERS = (("redis-rdb-bgsave", "BGSAVE"), ("redis-aof-rewrite", "BGREWRITEAOF"),
                  ("redis-rdb-to-slaves", "replication (full sync to a replica)"))
FORKING_COMMANDS = {"BGSAVE": "BGSAVE", "BGREWRITEAOF": "BGREWRITEAOF", "SYNC": "replication (full sync to a replica)",
                    "PSYNC": "replication (full sync to a replica)"}
# the switch itself, at the top of every stack taken at a switch-out: not the wait
SCHEDULER_FRAMES = ("__traceiter_", "__schedule", "schedule", "preempt_schedule", "__bpf_trace", "bpf_trace",
                    "perf_trace", "trace_call_bpf")


@dataclass(slots=True)
class Competitor:
    pid: int
    comm: str
    ns: int


@dataclass(slots=True)
class KernelWait:
    stack: str                  # folded, root first ("" unknown)
    state: str
    ns: int

    @property
    def top(self) -> str:
        """The innermost frames below the scheduler's own, innermost first: 'do_nanosleep <- hrtimer_nanosleep'."""
        frames = [f for f in self.stack.split(";") if f]
        while frames and frames[-1].startswith(SCHEDULER_FRAMES):
            frames.pop()
        frames = frames[-FRAMES_SHOWN:]
        return " <- ".join(reversed(frames)) if frames else "kernel stack unknown"


@dataclass(slots=True)
class OffCpuFacts:
    duration_ns: int
    runnable_ns: int = 0
    blocked_ns: int = 0
    faults: int = 0
    competitors: list = field(default_factory=list)     # [Competitor], most time first
    waits: list = field(default_factory=list)           # [KernelWait], most time first
    forks: list = field(default_factory=list)           # [Fork] overlapping the span
    fork_ns: int = 0
    lost: list = field(default_factory=list)            # (start, end) the thread lost: waits, sleeps, forks
    seen: bool = False          # the sched probes ran for this span (any item, or a LOOP with faults)

    @property
    def top_competitor(self) -> Competitor | None:
        return self.competitors[0] if self.competitors else None


def _overlap(a: int, b: int, start: int, end: int) -> int:
    return max(0, min(b, end) - max(a, start))


def offcpu_facts(items: list, start: int, end: int, faults: int = 0) -> OffCpuFacts:
    """The scheduler's items (OffCpu, RunSlice, Fork of this tgid) joined with the span start..end."""
    facts = OffCpuFacts(duration_ns=max(1, end - start), faults=faults, seen=bool(items) or faults > 0)
    competitors: dict = {}
    waits: dict = {}
    for it in items:
        if isinstance(it, OffCpu):
            runnable = it.runnable_ts
            if runnable:
                facts.runnable_ns += _overlap(runnable, it.in_ts, start, end)
                facts.lost.append((runnable, it.in_ts))
            if not it.preempted and not it.in_epoll:
                ns = _overlap(it.out_ts, it.blocked_end_ts, start, end)
                if ns:
                    facts.lost.append((it.out_ts, it.blocked_end_ts))
                    facts.blocked_ns += ns
                    key = (it.stack, it.state_name)
                    waits[key] = waits.get(key, 0) + ns
        elif isinstance(it, RunSlice):
            ns = _overlap(it.start_ts, it.end_ts, start, end)
            if ns:
                c = competitors.get(it.pid)
                if c is None:
                    c = competitors[it.pid] = Competitor(it.pid, it.comm, 0)
                c.ns += ns
        elif isinstance(it, Fork):
            if it.end_ts >= start - WAKE_SLACK_NS and (it.start_ts or it.end_ts) <= end:
                facts.forks.append(it)
                facts.fork_ns += _overlap(it.start_ts or it.end_ts, it.end_ts, start, end)
                facts.lost.append((it.start_ts or it.end_ts, it.end_ts))
    facts.competitors = sorted(competitors.values(), key=lambda c: (-c.ns, c.pid))
    facts.waits = sorted((KernelWait(stack, state, ns) for (stack, state), ns in waits.items()),
                         key=lambda w: -w.ns)
    return facts


@dataclass(frozen=True, slots=True)
class LostSpan:
    """Time the thread lost, shaped like an executed request (victims.find_victims reads these fields)."""

    exec_start_ts: int
    exec_end_ts: int


@dataclass(frozen=True, slots=True)
class LostUnit:
    members: tuple


def lost_units(facts: OffCpuFacts) -> list:
    """The thread's lost time as the "culprit execution" that requests in the span waited on."""
    return [LostUnit(tuple(LostSpan(a, b) for a, b in facts.lost))] if facts.lost else []


def sched_class(facts: OffCpuFacts) -> str | None:
    """The class the scheduler's facts alone give the span, or None."""
    need = SCHED_SHARE * facts.duration_ns
    if facts.forks and facts.fork_ns >= need:
        return "fork"
    if facts.runnable_ns >= need:
        return CPU_STARVED
    if facts.blocked_ns >= need:
        return "blocked"
    return None


def fork_trigger(fork: Fork, commands=()) -> str:
    """What made Redis fork: the child's name, else a forking command run in the span."""
    for prefix, trigger in CHILD_TRIGGERS:
        if fork.child_cmdline.startswith(prefix):
            return trigger
    for name in commands:
        trigger = FORKING_COMMANDS.get((name or "").split(" ", 1)[0].upper())
        if trigger:
            return trigger
    return "serverCron (a save point, an AOF rewrite or a replica's full sync)"


def _share(ns: int, whole: int) -> str:
    return f"{100.0 * ns / max(1, whole):.0f} %"


def sched_evidence(facts: OffCpuFacts, commands=()) -> list[str]:
    """The scheduler's words for a stall (empty without sched data)."""
    out = []
    dur = facts.duration_ns
    if facts.runnable_ns >= NS_PER_MS:
        who = ", ".join(f"{c.comm} (pid {c.pid}) {_share(c.ns, facts.runnable_ns)}"
                        for c in facts.competitors[:COMPETITORS_LISTED]) or "not seen"
        out.append(f"main thread runnable but not running for {ns_to_ms(facts.runnable_ns):.1f} ms "
                   f"({_share(facts.runnable_ns, dur)} of the span); on its CPU ran instead: {who}")
    if facts.blocked_ns >= NS_PER_MS:
        waits = "; ".join(f"{w.top} [{w.state}] {ns_to_ms(w.ns):.1f} ms" for w in facts.waits[:WAITS_LISTED])
        out.append(f"main thread blocked in the kernel for {ns_to_ms(facts.blocked_ns):.1f} ms "
                   f"({_share(facts.blocked_ns, dur)} of the span): {waits}")
    for f in facts.forks:
        rss = f", RSS {f.rss_bytes / 2**20:.0f} MiB" if f.rss_bytes else ""
        took = f" took {ns_to_ms(f.duration_ns):.1f} ms" if f.duration_ns else ""
        out.append(f"fork for {fork_trigger(f, commands)}{took}{rss} (child pid {f.child})")
    if facts.faults:
        out.append(f"{facts.faults} user page faults of the main thread in the span")
    return out


def sched_advice(cls: str, facts: OffCpuFacts) -> list[str]:
    if cls == "cpu-starved":
        who = facts.top_competitor
        name = f"{who.comm} (pid {who.pid})" if who else "the competing process"
        return [f"{name} took the CPU Redis's main thread was waiting for: move it to other CPUs (taskset, "
                "cgroup cpusets), lower its priority (nice, no real-time class), or pin redis-server to CPUs of "
                "its own.",
                "Check CPU steal and quotas (vmstat `st`, cgroup cpu.max throttling) if the competitor is outside "
                "this host's view."]
    if cls == "blocked":
        return ["The main thread slept in the kernel: read the wait's stack — page cache / major faults point to "
                "swapping or a memory-mapped file (disable swap, `vm.swappiness`), `folio_wait`/`io_schedule` to "
                "disk I/O on the main thread, mutex/rwsem frames to kernel lock contention (e.g. THP compaction: "
                "`echo never > /sys/kernel/mm/transparent_hugepage/enabled`)."]
    if cls == "fork":
        return ["Fork time grows with the dataset's memory (page tables): keep instances smaller, disable "
                "transparent huge pages, and schedule BGSAVE/BGREWRITEAOF when traffic is low.",
                "On a replica-less cache, consider turning persistence off (`save \"\"`, `appendonly no`); with "
                "replicas, use diskless replication only where the fork is cheap."]
    return []


def offcpu_json(facts: OffCpuFacts, commands=()) -> dict | None:
    """The facts for report --json (None without sched data)."""
    if not facts.seen:
        return None
    return {
        "runnable_ms": ns_to_ms(facts.runnable_ns), "blocked_ms": ns_to_ms(facts.blocked_ns),
        "page_faults": facts.faults,
        "competitors": [{"pid": c.pid, "comm": c.comm, "ms": ns_to_ms(c.ns),
                         "share": round(c.ns / max(1, facts.runnable_ns), 3)}
                        for c in facts.competitors[:COMPETITORS_LISTED]],
        "waits": [{"state": w.state, "top": w.top, "stack": w.stack, "ms": ns_to_ms(w.ns)}
                  for w in facts.waits[:WAITS_LISTED]],
        "forks": [{"trigger": fork_trigger(f, commands), "child": f.child, "ms": ns_to_ms(f.duration_ns),
                   "rss_bytes": f.rss_bytes} for f in facts.forks],
    }


def culprit_of(cls: str, facts: OffCpuFacts, commands=()) -> str:
    """The one-line culprit of a stall the scheduler explains (the competitor, the wait, the fork)."""
    if cls == "cpu-starved" and facts.top_competitor is not None:
        c = facts.top_competitor
        return f"{c.comm} (pid {c.pid})"
    if cls == "blocked" and facts.waits:
        return facts.waits[0].top
    if cls == "fork" and facts.forks:
        return f"fork for {fork_trigger(facts.forks[0], commands)}"
    return ""
