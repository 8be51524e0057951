"""The evidence for a stall's class, in words: what an operator reads next to the advice.

Takes the facts (tracer.analyze.classify, culprits, victims) and writes sentences; decides nothing.
"""
from __future__ import annotations

from tracer.analyze.stall_classes import BIG_REPLY_BYTES
from tracer.units import say_bytes, say_ms, say_pct

LISTED_COMMANDS = 3
LISTED_UNKNOWN = 8


def _aof(facts, overlap) -> list[str]:
    dur = facts.duration_ns
    out = []
    for x in sorted(facts.main_syncs, key=lambda x: (-overlap(x.start_ts, x.end_ts), x.start_ts))[:3]:
        what = f"AOF write of {say_bytes(x.nbytes)}" if x.op == "aof-write" else x.op
        out.append(f"main-thread {what} on fd {x.fd} took {say_ms(x.duration_ns)}"
                   f" ({say_pct(overlap(x.start_ts, x.end_ts), dur)} of the {say_ms(dur)} stall)")
    if len(facts.main_syncs) > 1:
        out.append(f"{len(facts.main_syncs)} main-thread file syncs/AOF writes covered {say_ms(facts.sync_ns)}"
                   f" ({say_pct(facts.sync_ns, dur)} of the stall)")
    return out


def _command_class(facts, culprits) -> list[str]:
    dur = facts.duration_ns
    out = []
    for name, share in facts.commands_of(facts.cls)[:LISTED_COMMANDS]:
        ex = share.example
        key = f" key '{ex.key}'" if ex.key is not None else ""
        who = f" from {ex.client}" if ex.client else ""
        if share.count == 1:
            out.append(f"{name}{key}{who} ran {say_ms(share.ns)} on the main thread"
                       f" ({say_pct(share.ns, dur)} of the {say_ms(dur)} stall)")
        else:
            out.append(f"{share.count} x {name} (e.g.{key}{who}) ran {say_ms(share.ns)} in total on the main thread"
                       f" ({say_pct(share.ns, dur)} of the {say_ms(dur)} stall)")
        if ex.reply_bytes >= BIG_REPLY_BYTES:
            out.append(f"{name} replied {say_bytes(ex.reply_bytes)} (>= 1 MB)")
    unit = culprits.main_unit
    if unit is not None and len(unit.members) > 1:
        names = sorted({(m.command or "?").upper() for m in unit.members})
        out.append(f"execution time inferred for a pipelined batch of {len(unit.members)}"
                   f" commands ({', '.join(names[:5])}); attributed to {(culprits.main.command or '?').upper()},"
                   f" the batch's only {facts.cls} command")
    return out


def _unknown(facts, culprits, units, inspan_total: int, io_reads: int, over_cmds: dict, over_conn_exec: dict,
             overlap) -> list[str]:
    dur = facts.duration_ns
    out = []
    if inspan_total:
        per: dict = {}
        for u in units:
            for m in u.members:
                a = per.setdefault((m.command or "?").upper(), [0, 0])
                a[0] += 1
                if m.exec_start_ts and m.exec_end_ts:
                    a[1] += overlap(m.exec_start_ts, m.exec_end_ts)
        for name, (n, ns) in over_cmds.items():
            a = per.setdefault(name, [0, 0])
            a[0] += n
            a[1] += ns
        parts = [f"{name} x{n} ({say_ms(ns)})" for name, (n, ns) in
                 sorted(per.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:LISTED_UNKNOWN]]
        more = f" ({inspan_total} in all)" if len(per) > LISTED_UNKNOWN else ""
        out.append(f"commands executed in the stall: {', '.join(parts)}{more}")
        if not culprits.timed_any:
            out.append("their execution was not timed (no exec timestamps)")
        elif facts.class_ns[facts.best]:
            best_ns = facts.class_ns[facts.best]
            out.append(f"{facts.best} commands explain only {say_ms(best_ns)} ({say_pct(best_ns, dur)}) of the stall")
    if io_reads:
        out.append(f"{io_reads} commands read by IO threads during the stall (execution not timed)")
    if facts.main_syncs:
        out.append(f"main-thread file syncs/AOF writes: {len(facts.main_syncs)} covering {say_ms(facts.sync_ns)}"
                   f" ({say_pct(facts.sync_ns, dur)})")
    accounted = sum(u.exec_ns for u in units) + sum(over_conn_exec.values()) + facts.sync_ns
    out.append(f"{say_ms(max(0, dur - accounted))} of the {say_ms(dur)} stall not accounted for"
               " by traced commands or file syncs")
    return out


def evidence(facts, culprits, units, victims, *, inspan_total: int, io_reads: int, over_cmds: dict,
             over_conn_exec: dict, overlap) -> list[str]:
    """The sentences for one stall, the class's own first, then background syncs and victims."""
    if facts.cls == "aof":
        out = _aof(facts, overlap)
    elif facts.cls == "not-redis":
        out = [f"main thread busy {say_ms(facts.duration_ns)} without a traced command:"
               " serverCron/expiry/eviction or off-CPU"]
    elif facts.cls == "unknown":
        out = _unknown(facts, culprits, units, inspan_total, io_reads, over_cmds, over_conn_exec, overlap)
    else:
        out = _command_class(facts, culprits)
    for x in sorted(facts.background_syncs, key=lambda x: (-x.duration_ns, x.start_ts))[:2]:
        out.append(f"background {x.op} on thread {x.tid} overlapped {say_ms(overlap(x.start_ts, x.end_ts))}")
    if victims.count:
        out.append(f"{victims.count} requests from {len(victims.conns)} other connections waited,"
                   f" up to {say_ms(victims.added_max_ns)} each")
    return out
