"""The facts of a stall: what its span was spent on, and the class that explains it.

aof: main-thread file syncs/AOF writes cover >= AOF_SHARE of the span; bigkey/lua/keyspace: the
culprits' commands of that class explain >= CLASS_SHARE; not-redis: nothing traced ran in it;
unknown: anything else. Only facts here: the words are tracer.analyze.evidence's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tracer.analyze.culprits import Culprits, unit_class, unit_representative
from tracer.analyze.stall_classes import BIG_REPLY_BYTES, CLASS_PRIORITY

CLASS_SHARE = 0.5                 # a class must explain at least this share of the span
AOF_SHARE = 0.5


@dataclass(slots=True)
class ClassShare:
    """A command of the winning class: how often, how long, and its longest example."""

    count: int
    ns: int
    example: object


@dataclass(slots=True)
class StallFacts:
    cls: str
    duration_ns: int
    main_syncs: list                    # main-thread FileSyncs in the span
    sync_ns: int                        # how much of the span they cover
    background_syncs: list              # fsyncs on other threads overlapping it
    class_ns: dict                      # class -> ns of the span its culprit commands explain
    class_commands: dict = field(default_factory=dict)   # class -> command name -> ClassShare
    best: str = CLASS_PRIORITY[0]       # the command class explaining most

    def commands_of(self, cls: str) -> list:
        """(name, ClassShare) of a class, longest first."""
        return sorted(self.class_commands.get(cls, {}).items(), key=lambda kv: (-kv[1].ns, kv[0]))


def classify(syncs: list, culprits: Culprits, duration_ns: int, traced_anything: bool, overlap) -> StallFacts:
    """traced_anything: a command ran (or was read by an IO thread) in the span."""
    main_syncs = [x for x in syncs if x.main_thread]
    sync_ns = sum(overlap(x.start_ts, x.end_ts) for x in main_syncs)
    background = [x for x in syncs if not x.main_thread and x.op != "aof-write"]
    class_ns = {c: 0 for c in CLASS_PRIORITY}
    class_commands: dict = {c: {} for c in CLASS_PRIORITY}
    for u in culprits.units:
        cls = unit_class(u)
        if cls is None or not u.timed:
            continue
        extra = 0
        if cls == "bigkey":     # a big reply written by the main thread is part of the cost
            for m in u.members:
                if m.reply_bytes >= BIG_REPLY_BYTES and m.reply_thread == m.tgid and m.reply_start_ts:
                    extra += overlap(m.reply_start_ts, m.reply_end_ts)
        class_ns[cls] += u.exec_ns + extra
        rep = unit_representative(u, overlap)
        name = (rep.command or "?").upper()
        share = class_commands[cls].get(name)
        if share is None:
            share = class_commands[cls][name] = ClassShare(0, 0, rep)
        share.count += 1
        share.ns += u.exec_ns + extra
        if overlap(rep.exec_start_ts, rep.exec_end_ts) > overlap(share.example.exec_start_ts,
                                                                 share.example.exec_end_ts):
            share.example = rep
    best = max(CLASS_PRIORITY, key=lambda c: (class_ns[c], -CLASS_PRIORITY.index(c)))
    if sync_ns >= AOF_SHARE * duration_ns:
        cls = "aof"
    elif class_ns[best] >= CLASS_SHARE * duration_ns:
        cls = best
    elif not traced_anything and not main_syncs:
        cls = "not-redis"
    else:
        cls = "unknown"
    return StallFacts(cls=cls, duration_ns=duration_ns, main_syncs=main_syncs, sync_ns=sync_ns,
                      background_syncs=background, class_ns=class_ns, class_commands=class_commands, best=best)
