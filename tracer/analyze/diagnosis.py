"""Stalls: long main-thread busy spans, joined with the requests and file syncs around them.

A stall is a BusySpan lasting at least stall_ms. For each one:

* in-span requests: executed on the main thread inside the span (exec interval overlapping it;
  without exec timestamps: read on the main thread, read_end inside the span);
* culprits: the in-span requests of the connections whose execution covers >= 10 % of the span
  (or, if none does, of the connection with the most execution; if nothing was timed, all of
  them). The main culprit is the longest execution (the latest read when nothing was timed);
* victims: requests of other connections whose bytes arrived during the span (they could only
  be read after it: added = min(end, reply start) - max(start, arrival)), plus in-span requests
  of other connections that waited on a culprit's execution in the same loop iteration
  (added = culprit execution between their wake-up and their reply);
* class, with evidence strings: aof, bigkey, lua, keyspace, not-redis, unknown.

Each step is a module of its own: culprits.py (execution units, culprits), classify.py (the
facts and the class), victims.py, evidence.py (the words) and advice.py; this module joins a
span with its requests and assembles their answers.

The LOOP record arrives at the next epoll entry, culprits usually before it and victims after:
each stall takes requests from a bounded lookback when it opens and stays open, joining new
requests and syncs, until trace time passes its end + 2 s (or finish()).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tracer.analyze import oncpu
from tracer.analyze.advice import advice_for
from tracer.analyze.classify import classify
from tracer.analyze.culprits import execution_units, find_culprits, listed_culprits
from tracer.analyze.evidence import evidence
from tracer.analyze.stall_classes import BIG_REPLY_BYTES
from tracer.analyze.victims import find_victims
from tracer.options import STALL_MS
from tracer.schema import Culprit, StallResult
from tracer.units import NS_PER_MS, NS_PER_S, ns_to_ms

JOIN_NS = 2 * NS_PER_S            # stalls stay open this long after their end for victims
LOOKBACK_NS = 5 * NS_PER_S        # recent requests kept for culprits that completed before the span record
LOOKBACK_MAX = 50_000
SYNC_LOOKBACK_MAX = 10_000
ORDER_SLACK_NS = NS_PER_S         # tolerated disorder of completion times in the lookback
MAX_INSPAN = 2_000                # requests kept per stall; beyond, only those executing >= 1 % of the
MAX_HEAVY = 500                   # span are kept (at most MAX_HEAVY), the rest are aggregated
MAX_SYNCS = 1_000
MAX_OPEN = 64
MAX_DONE = 1_000                  # finished stalls kept (the longest)
MAX_CULPRITS_LISTED = 5
PROPAGATED_AFTER_NS = NS_PER_S    # a deletion sent to replicas this long after a span still tells its key
MAX_DELETED = 100


def request_ts(req) -> int:
    """When a request was last touched (its completion), for ordering and the lookback."""
    return req.reply_end_ts or req.read_end_ts or req.arrival_ts or req.read_start_ts


@dataclass(slots=True)
class StallVerdict:
    """A stall's diagnosis in trace time (ns); format_stall turns it into the reported StallResult."""

    start_ts: int
    end_ts: int
    seq: int
    duration_ms: float
    command: str
    key: object
    client: str
    victims: int
    victim_added_ms: float
    victim_added_total_ms: float
    victim_added_mean_ms: float
    class_: str
    evidence: list
    advice: list
    culprits: list          # [Culprit], longest execution first
    cpu: object = None      # oncpu.CpuFacts: what the main thread ran on the CPU, None: not sampled


class Stall:
    """One long busy span being joined with requests and syncs."""

    __slots__ = ("tgid", "start", "end", "seq", "inspan", "inspan_total", "heavy", "over_conn_exec",
                 "over_cmds", "io_reads", "arrivals", "syncs", "syncs_total", "version", "_cached", "cpu",
                 "deleted")

    def __init__(self, span, seq: int = 0):
        self.tgid = span.tgid
        self.start = span.start_ts
        self.end = span.end_ts
        self.seq = seq
        self.inspan: list = []          # requests executed on the main thread in the span (capped)
        self.inspan_total = 0
        self.heavy: list = []           # beyond MAX_INSPAN: requests with a long execution
        self.over_conn_exec: dict = {}  # beyond MAX_INSPAN, the rest: conn_id -> exec ns in the span
        self.over_cmds: dict = {}       # and command -> [count, exec ns]
        self.io_reads = 0               # read by IO threads in the span, execution not timed
        self.arrivals: dict = {}        # conn_id -> [n, added_total_ns, added_max_ns] (bytes arrived in the span)
        self.syncs: list = []           # FileSyncs of this process overlapping the span (capped)
        self.syncs_total = 0
        self.version = 0                # bumped by every change, for the cached verdict
        self._cached = None
        self.cpu = None                 # oncpu.CpuFacts from the span's STACKS record
        self.deleted: list = []         # keys the master told replicas it deleted, in or just after the span

    @property
    def duration_ns(self) -> int:
        return max(0, self.end - self.start)

    def _overlap(self, a: int, b: int) -> int:
        return max(0, min(b, self.end) - max(a, self.start))

    # -- joining ----------------------------------------------------------------------------
    def offer(self, req) -> None:
        if req.tgid != self.tgid:
            return
        s, e = self.start, self.end
        xs, xe = req.exec_start_ts, req.exec_end_ts
        if xs and xe:
            if xs < e and (xe > s or xs >= s):
                self._add_inspan(req)
                return
        elif req.read_end_ts and s <= req.read_end_ts < e:
            if req.thread == req.tgid:
                self._add_inspan(req)
                return
            self.io_reads += 1
            self.version += 1
        arrival = req.arrival_ts
        if not arrival:
            rs = req.read_start_ts
            arrival = rs if s <= rs < e else 0
        if arrival and s <= arrival < e:
            done = req.reply_start_ts or req.reply_end_ts or e
            added = max(0, min(e, done) - max(s, arrival))
            self.version += 1
            agg = self.arrivals.get(req.conn_id)
            if agg is None:
                self.arrivals[req.conn_id] = [1, added, added]
            else:
                agg[0] += 1
                agg[1] += added
                if added > agg[2]:
                    agg[2] = added

    def _add_inspan(self, req) -> None:
        self.version += 1
        self.inspan_total += 1
        if len(self.inspan) < MAX_INSPAN:
            self.inspan.append(req)
            return
        x = self._overlap(req.exec_start_ts, req.exec_end_ts) if req.exec_end_ts else 0
        if x * 100 >= self.duration_ns and len(self.heavy) < MAX_HEAVY:
            self.heavy.append(req)
            return
        self.over_conn_exec[req.conn_id] = self.over_conn_exec.get(req.conn_id, 0) + x
        agg = self.over_cmds.setdefault((req.command or "?").upper(), [0, 0])
        agg[0] += 1
        agg[1] += x

    def offer_stacks(self, stacks) -> bool:
        """The span's on-CPU samples (kernel.stacks.StacksAt): True when they are this stall's."""
        if stacks.tgid != self.tgid or stacks.start_ts != self.start:
            return False
        self.cpu = oncpu.cpu_facts(stacks.folded, stacks.samples, stacks.on_cpu_share)
        self.version += 1
        return True

    def offer_propagated(self, deletion) -> None:
        """A DEL/UNLINK sent to replicas: Redis propagates a key it expired in the span right after it."""
        if deletion.tgid == self.tgid and self.start <= deletion.ts <= self.end + PROPAGATED_AFTER_NS \
                and len(self.deleted) < MAX_DELETED:
            self.deleted.append(deletion)
            self.version += 1

    def offer_sync(self, sync) -> None:
        if sync.tgid != self.tgid:
            return
        if sync.start_ts < self.end and (sync.end_ts > self.start or sync.start_ts >= self.start):
            self.version += 1
            self.syncs_total += 1
            if len(self.syncs) < MAX_SYNCS:
                self.syncs.append(sync)

    # -- the verdict ------------------------------------------------------------------------
    def compute(self) -> StallVerdict:
        """The stall's diagnosis (timestamps in ns; see format_stall), cached until the next change.
        The verdict is shared: do not modify it."""
        if self._cached is not None and self._cached[0] == self.version:
            return self._cached[1]
        result = self._compute()
        self._cached = (self.version, result)
        return result

    def _compute(self) -> StallVerdict:
        """units -> culprits -> facts (class) -> victims -> evidence (words) and advice."""
        s, e = self.start, self.end
        dur = max(1, e - s)
        ov = self._overlap
        units = execution_units(self.inspan + self.heavy, ov)
        culprits = find_culprits(units, self.over_conn_exec, len(self.inspan) + len(self.heavy), dur, ov)
        facts = classify(self.syncs, culprits, dur, bool(self.inspan_total or self.io_reads), ov)
        cpu, inferred, work = self.cpu, culprits.main, culprits.units
        if cpu is not None:     # the samples decide: the class from the thread's work, culprits only if they ran it
            if not cpu.commands_ran_it:
                culprits = oncpu.without_culprits(culprits)
                work = oncpu.span_work(s, e)
            facts.cls = cpu.cls or (facts.cls if cpu.commands_ran_it or facts.cls in ("aof", "not-redis")
                                    else "unknown")
        victims = find_victims(s, e, self.arrivals, units, culprits.conns, work)
        words = evidence(facts, culprits, units, victims, inspan_total=self.inspan_total, io_reads=self.io_reads,
                         over_cmds=self.over_cmds, over_conn_exec=self.over_conn_exec, overlap=ov)
        if cpu is not None:
            first, after = oncpu.evidence(cpu, facts.cls, inferred, [d.key for d in self.deleted])
            words = first + words + after
        listed = listed_culprits(culprits, ov)
        main = culprits.main
        advice_cmds = [main.command] if main is not None else []
        advice_cmds += [name for name, _ in facts.commands_of(facts.cls)]
        big_reply = any(m.reply_bytes >= BIG_REPLY_BYTES for m in listed)
        return StallVerdict(
            start_ts=s, end_ts=e, seq=self.seq, duration_ms=ns_to_ms(e - s),
            command=(main.command or "?").upper() if main is not None else "",
            key=main.key if main is not None else None,
            client=(main.client or "") if main is not None else "",
            victims=victims.count, victim_added_ms=ns_to_ms(victims.added_max_ns),
            victim_added_total_ms=ns_to_ms(victims.added_total_ns),
            victim_added_mean_ms=ns_to_ms(victims.added_mean_ns) if victims.count else 0.0,
            class_=facts.cls, evidence=words,
            advice=advice_for(facts.cls, advice_cmds, big_reply=big_reply and facts.cls == "bigkey"),
            culprits=[Culprit(command=(m.command or "?").upper(), key=m.key, client=m.client or "",
                              exec_ms=ns_to_ms(ov(m.exec_start_ts, m.exec_end_ts)) if m.exec_end_ts else None,
                              reply_bytes=m.reply_bytes)
                      for m in listed[:MAX_CULPRITS_LISTED]], cpu=cpu)


def format_stall(v: StallVerdict, first_ts: int, open_: bool | None = None) -> StallResult:
    """A verdict as reported: times in seconds from the trace's first event."""
    base = first_ts or v.start_ts
    return StallResult(start_s=round(max(0, v.start_ts - base) / NS_PER_S, 3), duration_ms=v.duration_ms,
                       command=v.command, key=v.key, client=v.client, victims=v.victims,
                       victim_added_ms=v.victim_added_ms, end_s=round(max(0, v.end_ts - base) / NS_PER_S, 3),
                       class_=v.class_, evidence=list(v.evidence), advice=list(v.advice),
                       culprits=list(v.culprits), victim_added_total_ms=v.victim_added_total_ms,
                       victim_added_mean_ms=v.victim_added_mean_ms, open=open_,
                       samples=v.cpu.samples if v.cpu is not None else None,
                       frames=list(v.cpu.paths) if v.cpu is not None else None,
                       folded=list(v.cpu.folded) if v.cpu is not None else None)


def _stall_order(v: StallVerdict):
    return (-v.end_ts + v.start_ts, v.start_ts, v.seq)


class StallDetector:
    """Finds stalls among busy spans and joins them with requests and file syncs, in bounded memory."""

    def __init__(self, stall_ms: float = STALL_MS, join_s: float = JOIN_NS / NS_PER_S, lookback_s: float = 5.0,
                 lookback_max: int = LOOKBACK_MAX, max_stalls: int = MAX_DONE, on_stall=None):
        self.stall_ns = int(stall_ms * NS_PER_MS)
        self.join_ns = int(join_s * NS_PER_S)
        self.lookback_ns = int(lookback_s * NS_PER_S)
        self.lookback_max = lookback_max
        self.max_stalls = max_stalls
        self.on_stall = on_stall            # called with each finished StallVerdict
        self.lookback: deque = deque()      # (completion ts, request) of recent requests
        self.sync_lookback: deque = deque()
        self.deleted_lookback: deque = deque()
        self.open: list[Stall] = []         # in span-record order
        self.done: list[StallVerdict] = []  # finished verdicts (longest max_stalls kept)
        self.recent: deque = deque(maxlen=10)
        self.stalls_total = 0
        self.dropped = 0                    # finished stalls beyond max_stalls (shortest dropped)
        self.now = 0

    # -- input --------------------------------------------------------------------------------
    def on_request(self, req, ts: int | None = None) -> None:
        if self.open:
            for st in self.open:
                st.offer(req)
        t = request_ts(req) if ts is None else ts
        lookback = self.lookback
        lookback.append((t, req))
        if t > self.now:
            self.now = t
            if self.open and self.open[0].end + self.join_ns < t:
                self.advance(t)
        limit = self.now - self.lookback_ns
        while lookback and (len(lookback) > self.lookback_max or lookback[0][0] < limit):
            lookback.popleft()

    def on_stacks(self, stacks) -> None:
        """A STACKS record follows its span's LOOP record: the stall it belongs to is open."""
        for st in self.open:
            if st.offer_stacks(stacks):
                return

    def on_propagated(self, deletion) -> None:
        """A DEL/UNLINK sent to replicas (stitch.model.Propagated); it is written before the span's LOOP
        record comes, so recent ones are kept for the stall that opens then."""
        for st in self.open:
            st.offer_propagated(deletion)
        self.deleted_lookback.append(deletion)
        self._prune(self.deleted_lookback, lambda x: x.ts, SYNC_LOOKBACK_MAX)

    def on_sync(self, sync) -> None:
        for st in self.open:
            st.offer_sync(sync)
        self.sync_lookback.append(sync)
        self.advance(sync.end_ts)
        self._prune(self.sync_lookback, lambda x: x.end_ts, SYNC_LOOKBACK_MAX)

    def on_busy(self, span) -> None:
        self.advance(span.end_ts)
        if span.duration_ns < self.stall_ns or not span.start_ts:
            return
        st = Stall(span, self.stalls_total)
        self.stalls_total += 1
        edge = span.start_ts - ORDER_SLACK_NS
        recent = []
        for t, req in reversed(self.lookback):
            if t and t < edge:
                break
            recent.append(req)
        for req in reversed(recent):        # in completion order, as if they had come after
            st.offer(req)
        syncs = []
        for x in reversed(self.sync_lookback):
            if x.end_ts and x.end_ts < edge:
                break
            syncs.append(x)
        for x in reversed(syncs):
            st.offer_sync(x)
        for x in self.deleted_lookback:
            st.offer_propagated(x)
        self.open.append(st)
        while len(self.open) > MAX_OPEN:
            self._close(self.open.pop(0))

    def advance(self, ts: int) -> None:
        """Trace time moved to ts: stalls whose join window passed are finished."""
        if ts and ts > self.now:
            self.now = ts
        while self.open and self.open[0].end + self.join_ns < self.now:
            self._close(self.open.pop(0))

    def finish(self) -> None:
        while self.open:
            self._close(self.open.pop(0))

    def _prune(self, dq: deque, ts_of, cap: int) -> None:
        limit = self.now - self.lookback_ns
        while dq and (len(dq) > cap or ts_of(dq[0]) < limit):
            dq.popleft()

    def _close(self, st: Stall) -> None:
        result = st.compute()
        self.done.append(result)
        self.recent.append(result)
        if len(self.done) > self.max_stalls + self.max_stalls // 5:
            self.done.sort(key=_stall_order)
            self.dropped += len(self.done) - self.max_stalls
            del self.done[self.max_stalls:]
        if self.on_stall is not None:
            self.on_stall(result)

    # -- output -------------------------------------------------------------------------------
    def results(self) -> list[StallVerdict]:
        """All stalls (finished, and open ones as they stand), longest first."""
        out = list(self.done) + [st.compute() for st in self.open]
        out.sort(key=_stall_order)
        return out[:self.max_stalls]

    def latest(self, n: int = 10) -> list[tuple[StallVerdict, bool]]:
        """The n newest stalls as (result, still_open), newest first."""
        items = [(r, False) for r in self.recent] + [(st.compute(), True) for st in self.open[-n:]]
        items.sort(key=lambda it: (-it[0].start_ts, -it[0].seq))
        return items[:n]
