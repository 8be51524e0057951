"""Each step of a stall's diagnosis on its own: units → culprits → classification (facts) →
victims → evidence (words). Root-free; tests/test_diagnosis.py checks them assembled."""
from __future__ import annotations

from tracer.analyze.classify import classify
from tracer.analyze.culprits import execution_units, find_culprits, listed_culprits, unit_class
from tracer.analyze.evidence import evidence
from tracer.analyze.victims import Intervals, Victims, find_victims
from tracer.stitch.model import FileSync

from test_diagnosis import MS, PID, T0, US, mkreq

START, END = T0, T0 + 100 * MS
DUR = END - START


def overlap(a, b):
    return max(0, min(b, END) - max(a, START))


def facts_of(requests, syncs=()):
    units = execution_units(requests, overlap)
    culprits = find_culprits(units, {}, len(requests), DUR, overlap)
    return units, culprits, classify(list(syncs), culprits, DUR, bool(requests), overlap)


# -- units ------------------------------------------------------------------------------------------
def test_an_inferred_pipelined_batch_is_one_unit():
    batch = [mkreq(1, c, "k", read_start=START, read_end=START + 10 * US, exec_start=START + 10 * US + i * MS,
                   exec_ns=MS, batch=3) for i, c in enumerate(("GET", "HGETALL", "SET"))]
    alone = mkreq(2, "GET", read_start=START + 5 * MS)
    units = execution_units(batch + [alone], overlap)
    assert [len(u.members) for u in units] == [3, 1]
    assert units[0].exec_ns == 3 * MS and units[0].timed and unit_class(units[0]) == "bigkey"
    uprobe = [mkreq(1, "GET", read_start=START, read_end=START + 10 * US, batch=3) for _ in range(3)]
    for r in uprobe:
        r.exec_source = "uprobe"            # measured, not inferred: each request stands alone
    assert len(execution_units(uprobe, overlap)) == 3


# -- culprits -----------------------------------------------------------------------------------------
def test_culprits_are_connections_with_a_tenth_of_the_span():
    big = mkreq(1, "DEL", "big", read_start=START, exec_ns=80 * MS)
    mid = mkreq(2, "SORT", "s", read_start=START + 81 * MS, exec_ns=12 * MS)
    small = mkreq(3, "GET", "g", read_start=START + 94 * MS, exec_ns=2 * MS)
    units = execution_units([big, mid, small], overlap)
    found = find_culprits(units, {}, 3, DUR, overlap)
    assert found.conns == {1, 2} and found.main is big and found.timed_any
    assert listed_culprits(found, overlap) == [big, mid]


def test_no_culprit_share_falls_back_to_the_busiest_connection_and_untimed_to_all():
    reqs = [mkreq(c, "GET", read_start=START + c * MS, exec_ns=(c + 1) * MS) for c in range(1, 4)]
    found = find_culprits(execution_units(reqs, overlap), {}, 3, 10 * DUR, overlap)
    assert found.conns == {3} and found.main is reqs[2]
    untimed = [mkreq(c, "GET", read_start=START + c * MS, timed=False) for c in range(1, 4)]
    found = find_culprits(execution_units(untimed, overlap), {}, 3, DUR, overlap)
    assert found.conns == {1, 2, 3} and not found.timed_any and found.main is untimed[-1]   # latest read


# -- classification (facts) --------------------------------------------------------------------------------
def test_classes_from_facts():
    _, _, facts = facts_of([mkreq(1, "DEL", "big", read_start=START, exec_ns=90 * MS)])
    assert facts.cls == "bigkey" and facts.class_ns["bigkey"] == 90 * MS
    assert [(n, s.count) for n, s in facts.commands_of("bigkey")] == [("DEL", 1)]
    fsync = FileSync(PID, PID, 7, "fdatasync", START + MS, START + 80 * MS)
    assert facts_of([], [fsync])[2].cls == "aof"
    background = FileSync(PID, PID + 1, 7, "fsync", START, START + 90 * MS)
    _, _, facts = facts_of([], [background])
    assert facts.cls == "not-redis" and facts.background_syncs == [background]
    _, _, facts = facts_of([mkreq(1, "DEL", "k", read_start=START, exec_ns=20 * MS)])
    assert facts.cls == "unknown" and facts.best == "bigkey"      # explains only a fifth of the span


# -- victims ----------------------------------------------------------------------------------------
def test_intervals_cover():
    iv = Intervals([(0, 10), (5, 20), (30, 40), (50, 50)])
    assert iv.covered(0, 100) == 30 and iv.covered(15, 35) == 10 and iv.covered(20, 30) == 0


def test_victims_from_arrivals_and_from_waiting_behind_a_culprit():
    culprit = mkreq(1, "DEL", "big", read_start=START, exec_ns=90 * MS)
    waiter = mkreq(2, "GET", "g", wake=START, read_start=START + 91 * MS)     # same loop iteration
    units = execution_units([culprit, waiter], overlap)
    found = find_culprits(units, {}, 2, DUR, overlap)
    arrivals = {3: [2, 30 * MS, 20 * MS], 1: [5, 50 * MS, 10 * MS]}          # conn 1 is the culprit's own
    v = find_victims(START, END, arrivals, units, found.conns, found.units)
    assert v.count == 3 and v.conns == {2, 3}
    assert v.added_max_ns == 90 * MS and v.added_total_ns == 30 * MS + 90 * MS   # the whole DEL


# -- evidence (words) -------------------------------------------------------------------------------------
def test_evidence_words_name_the_culprit_the_share_and_the_victims():
    units, culprits, facts = facts_of([mkreq(1, "DEL", "big:set", read_start=START, exec_ns=90 * MS,
                                             client="10.0.0.1:5001")])
    victims = Victims()
    victims.add(2, 4, 40 * MS, 12 * MS)
    words = evidence(facts, culprits, units, victims, inspan_total=1, io_reads=0, over_cmds={}, over_conn_exec={},
                     overlap=overlap)
    assert words == ["DEL key 'big:set' from 10.0.0.1:5001 ran 90 ms on the main thread (90% of the 100 ms stall)",
                     "4 requests from 1 other connections waited, up to 12 ms each"]


def test_evidence_for_an_unexplained_stall_accounts_for_the_time():
    units, culprits, facts = facts_of([mkreq(1, "GET", "k", read_start=START, exec_ns=10 * MS)])
    words = evidence(facts, culprits, units, Victims(), inspan_total=1, io_reads=2, over_cmds={}, over_conn_exec={},
                     overlap=overlap)
    assert words[0] == "commands executed in the stall: GET x1 (10 ms)"
    assert "2 commands read by IO threads" in words[1]
    assert words[-1] == "90 ms of the 100 ms stall not accounted for by traced commands or file syncs"
