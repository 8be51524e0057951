"""Who made a stall: the execution units in its span, and the culprits among them.

A unit is one request, or a pipelined batch whose execution was inferred (split evenly over the
batch, so only the batch as a whole has a meaningful execution time). Culprits are the units of
the connections whose execution covers >= CULPRIT_CONN_SHARE of the span (or, if none does, of
the connection with the most execution; if nothing was timed, of every connection). The main
culprit is the longest unit (the latest read when nothing was timed).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tracer.analyze.stall_classes import command_class

CULPRIT_CONN_SHARE = 0.1


@dataclass(slots=True)
class Unit:
    conn: int
    order: int                          # position of its first request in the span
    members: list = field(default_factory=list)
    exec_ns: int = 0                    # execution inside the span
    timed: bool = False


@dataclass(slots=True)
class Culprits:
    conns: set                          # conn_ids whose units are culprits
    units: list                         # their units
    timed_any: bool                     # was any execution in the span timed
    main: object = None                 # the main culprit request
    main_unit: Unit | None = None


def execution_units(requests, overlap) -> list[Unit]:
    """requests: in-span requests in span order; overlap(a, b): ns of [a, b) inside the span."""
    units: list[Unit] = []
    by_key: dict = {}
    for i, r in enumerate(requests):
        timed = bool(r.exec_start_ts and r.exec_end_ts)
        key = ("batch", r.conn_id, r.read_end_ts) if timed and r.exec_source != "uprobe" and r.batch > 1 \
            else ("req", i)
        u = by_key.get(key)
        if u is None:
            u = by_key[key] = Unit(conn=r.conn_id, order=i)
            units.append(u)
        u.members.append(r)
        if timed:
            u.timed = True
            u.exec_ns += overlap(r.exec_start_ts, r.exec_end_ts)
    return units


def unit_class(u: Unit) -> str | None:
    """The unit's stall class when its commands agree on one."""
    classes = {command_class(m) for m in u.members} - {None}
    return classes.pop() if len(classes) == 1 else None


def unit_representative(u: Unit, overlap):
    """The request that stands for a unit: its one classed command, else its longest execution."""
    cls = unit_class(u)
    if cls is not None:
        for m in u.members:
            if command_class(m) == cls:
                return m
    return max(u.members, key=lambda m: (overlap(m.exec_start_ts, m.exec_end_ts) if m.exec_end_ts else 0))


def find_culprits(units: list[Unit], over_conn_exec: dict, n_kept: int, duration_ns: int, overlap) -> Culprits:
    """over_conn_exec: conn_id -> execution ns of the requests beyond the kept ones (n_kept of them)."""
    timed_any = any(u.timed for u in units) or any(over_conn_exec.values())
    conn_exec: dict = {}
    conn_order: dict = {}
    for u in units:
        conn_exec[u.conn] = conn_exec.get(u.conn, 0) + u.exec_ns
        conn_order.setdefault(u.conn, u.order)
    for c, x in over_conn_exec.items():
        conn_exec[c] = conn_exec.get(c, 0) + x
        conn_order.setdefault(c, n_kept)
    if not conn_exec:
        conns = set()
    elif timed_any:
        conns = {c for c, t in conn_exec.items() if t > 0 and t >= CULPRIT_CONN_SHARE * duration_ns}
        if not conns:
            conns = {max(conn_exec, key=lambda c: (conn_exec[c], -conn_order[c]))}
    else:
        conns = set(conn_exec)
    culprit_units = [u for u in units if u.conn in conns]
    found = Culprits(conns=conns, units=culprit_units, timed_any=timed_any)
    if culprit_units:
        if timed_any:
            found.main_unit = max(culprit_units, key=lambda u: (u.exec_ns, -u.order))
            found.main = unit_representative(found.main_unit, overlap)
        else:
            found.main = max((m for u in culprit_units for m in u.members),
                             key=lambda m: (m.read_end_ts, m.read_start_ts))
    return found


def listed_culprits(culprits: Culprits, overlap) -> list:
    """Every culprit request, longest execution first."""
    return sorted((m for u in culprits.units for m in u.members),
                  key=lambda m: (-(overlap(m.exec_start_ts, m.exec_end_ts) if m.exec_end_ts else 0),
                                 m.read_start_ts, m.conn_id))
