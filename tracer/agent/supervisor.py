"""The agent's life: find the redis-servers, attach the engine, drain, and attach again when they change.

One engine probe session follows every target (tracer/engine: counts and histograms stay in the
kernel). A session ends when a target exits (a Redis restart: the same port comes back with a new
pid) or, with --all, when a new redis-server appears; its figures are folded into the agent's base
(figures.py) and a new session is attached to whatever runs now. Only SIGTERM/SIGINT end the agent.

Stalls come from the same pipeline as `diagnose --engine` (runtime/pipeline.py, analyze/diagnosis.py);
each finished stall is counted, logged as one JSON line on stdout and, with --otlp-endpoint, exported
with its culprit and victim requests as spans.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections import deque

from tracer.agent.figures import AgentFigures
from tracer.agent.handover import NextSession
from tracer.agent.intervals import IntervalLog
from tracer.agent.logs import stall_line
from tracer.analyze.diagnosis import JOIN_NS
from tracer.engine.layout import SLOTS
from tracer.errors import TracerError
from tracer.kernel import events
from tracer.kernel.target import find_target, query_redis_info, redis_pids
from tracer.options import TraceOptions
from tracer.runtime import runner
from tracer.runtime.pipeline import Pipeline
from tracer.tracefile.trace_header import target_json
from tracer.units import NS_PER_S

RESCAN_S = 1.0                  # no target (yet, or again): look for one this often
RETRY_S = 5.0                   # after a failed attach; doubled after each further one, up to RETRY_MAX_S
RETRY_MAX_S = 120.0
HOLD_NS = JOIN_NS + NS_PER_S    # requests wait this long for a stall to claim them before export
PENDING_MAX = 10_000            # requests held for the stall spans (the engine sends up only slow,
                                # stalled, victim and 1-in-N sampled ones)
VICTIM_SPANS_MAX = 100          # victim spans linked to one stall (its span counts them all)
SIGNALS = ("SIGINT", "SIGTERM")


def say(message: str) -> None:
    print(f"redis-tracer agent: {message}", file=sys.stderr, flush=True)


def _fds_readable(pid: int) -> bool:
    """Whether /proc/<pid>/fd can be listed (file mode: CAP_DAC_READ_SEARCH) and its links read (the
    ptrace check: CAP_SYS_PTRACE). Tried, not access(): that checks the real uid without capabilities."""
    try:
        for name in os.listdir(f"/proc/{pid}/fd")[:1]:
            os.readlink(f"/proc/{pid}/fd/{name}")
        return True
    except FileNotFoundError:
        return True     # gone, or its fd closed meanwhile: not a permission problem
    except OSError:
        return False


def unreadable_hint() -> str:
    """Why a running redis-server's sockets may be invisible: its /proc/<pid>/fd is closed to us."""
    hidden = [pid for pid in redis_pids() if not _fds_readable(pid)]
    if not hidden:
        return ""
    pids = ", ".join(map(str, hidden[:5])) + (", ..." if len(hidden) > 5 else "")
    return (f" (cannot read /proc/<pid>/fd of {len(hidden)} redis-server(s), pid {pids}: a Redis running as another "
            "user needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, docs/SECURITY.md)")


class Agent:
    def __init__(self, trace: TraceOptions, spans=None, out=None, host: str | None = None,
                 interval_s: float | None = None):
        """trace: targets, stall/slow thresholds, poll interval (mode engine); spans: an otlp.SpanExport
        (or None); out: where the stall lines go (stdout); host: the host part of instance labels;
        interval_s: also print one line per interval of this length (intervals.py)."""
        self.trace = trace
        self.spans = spans
        self.out = out or sys.stdout
        self.intervals = IntervalLog(interval_s, self.out) if interval_s else None
        self.lock = threading.Lock()        # the main loop's feed against a scrape's read
        self.base = AgentFigures()          # finished sessions' figures, stalls, fsyncs
        self.session = None
        self.pipeline = None
        self.labels: dict = {}              # pid -> (instance label, port) of the session's targets
        self.current: dict = {}             # pid -> Target of the session's targets
        self.host = host or socket.gethostname()
        self.pid_ports: set = set()         # ports of --pid targets: where they come back after a restart
        self.said: set = set()              # messages about missing targets, said once each
        self.pending: deque = deque()       # (ts, pid, Request) waiting for a stall to claim them
        self.slow_ns = int((self.trace.slow_ms if self.trace.slow_ms is not None else self.trace.stall_ms / 5)
                           * 1e6)
        self.wall_offset = time.time_ns() - time.monotonic_ns()
        self.stop = None
        self.dead: set = set()              # pids of the session's targets that exited
        self.skipped: set = set()           # redis-servers found but not followed (unreadable, no slot left)
        self.next: NextSession | None = None    # the next session, compiling while this one counts

    # -- scrape side ---------------------------------------------------------------------------------
    def figures(self) -> AgentFigures:
        """Everything counted so far: the base plus the live session's kernel maps, read now."""
        with self.lock:
            live = self._session_figures() if self.session is not None else AgentFigures()
            return self.base.merged(live)

    def _session_figures(self) -> AgentFigures:
        session = self.session
        out = AgentFigures(known_commands=frozenset(session.table.names),
                           lost_events=session.counters().get("lost", 0))
        snap = session.snapshot()
        engine = self.pipeline.engine
        raw: dict = {}
        for (tgid, name), n in engine.raw.counts.items():
            raw.setdefault(tgid, {})[name] = n
        for pid, (label, _) in self.labels.items():
            stats = next((inst for inst in snap.instances.values() if inst.pid == pid), None)
            out.instance(label).add_engine(stats, raw.get(pid, {}), engine.raw_latencies.of(pid))
        return out

    # -- targets -------------------------------------------------------------------------------------
    def _once(self, message: str) -> None:
        if message not in self.said:
            self.said.add(message)
            say(message)

    def find_targets(self) -> list:
        o = self.trace
        found: dict = {}
        self.skipped = set()

        def add(what: str, **where):
            try:
                t = find_target(**where)
            except TracerError as err:
                self._once(f"waiting for {what}: {err}{unreadable_hint()}")
                if "pid" in where:
                    self.skipped.add(where["pid"])
                return
            found.setdefault(t.pid, t)

        if o.all_instances:
            for pid in redis_pids():
                add(f"pid {pid}", pid=pid)
            if not found:
                self._once("waiting for a redis-server to start")
        for pid in o.pids:
            if os.path.isdir(f"/proc/{pid}") or not self.pid_ports:    # once gone, its port is followed
                add(f"pid {pid}", pid=pid)
        for port in sorted(self.followed_ports()):
            add(f"a redis-server on port {port}", port=port)
        # the ones followed now first (no gap in their counts), then new ones by pid
        targets = sorted(found.values(), key=lambda t: (t.pid not in self.labels, t.pid))
        self.pid_ports.update(t.port for t in targets if t.pid in o.pids and t.port)
        if len(targets) > SLOTS:
            self._once(f"{len(targets)} redis-servers run; the engine follows {SLOTS} at once: "
                       f"pids {', '.join(str(t.pid) for t in targets[SLOTS:])} are not traced")
            self.skipped.update(t.pid for t in targets[SLOTS:])
            targets = targets[:SLOTS]
        # Nothing is sent to a server the running session follows (it would count our own queries):
        # its version and config are kept from its attach, and the servers not followed yet come
        # first, so the engine asks one of those for its command table.
        for t in targets:
            known = self.current.get(t.pid)
            t.info = known.info if known is not None else query_redis_info(t, o.credentials)
        return sorted(targets, key=lambda t: t.pid in self.current)

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        self.stop = runner.StopFlag()
        try:
            while not self.stop.stopped:
                session = None
                if self.next is not None:
                    nxt, self.next = self.next, None
                    targets = nxt.targets
                    try:
                        session = nxt.take()
                    except TracerError as err:
                        say(f"attaching failed: {err.line()}; trying again")
                        continue
                else:
                    targets = self.find_targets()
                    if not targets:
                        self._sleep(RESCAN_S)
                        continue
                try:
                    reason = self._trace(targets, session)
                except TracerError as err:
                    say(f"attaching failed: {err.line()}; trying again in {retry:g} s")
                    self._sleep(retry)
                    retry = min(retry * 2, RETRY_MAX_S)
                    continue
                retry = RETRY_S
                if reason in SIGNALS:
                    break
                say(f"re-attaching ({reason})")
        finally:
            self.stop.restore()
            if self.next is not None:
                self.next.cancel()
                self.next = None
            if self.spans is not None:
                self._flush_pending(None)
                self.spans.close()
        say(f"stopped ({self.stop.reason or reason})")
        return 0

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop.stopped and time.monotonic() < deadline:
            time.sleep(0.1)

    def _trace(self, targets: list, session=None) -> str:
        """Trace until a signal or a reason to attach again; session: attached already (a handover)."""
        session = session or runner.attach(self.trace, targets)
        try:
            self.said.clear()
            self.dead = set()
            pipeline = Pipeline(stall_ms=self.trace.stall_ms, targets=[target_json(t) for t in targets],
                                engine=True, on_request=self._on_request if self.spans is not None else None,
                                on_sync=self._on_sync, on_stall=self._on_stall, patterns=self.trace.patterns)
            with self.lock:
                self.session, self.pipeline = session, pipeline
                self.labels = {t.pid: (self.instance_label(t), t.port) for t in targets}
                self.current = {t.pid: t for t in targets}
                if self.intervals is not None:
                    self.intervals.begin(pipeline)
            for t in targets:
                say(f"tracing {t.describe()} as instance {self.labels[t.pid][0]}")

            def consume(records):
                with self.lock:
                    pipeline.feed(records)
            tick, tick_s = (self._interval_tick, self.intervals.interval_s) if self.intervals else (None, 0.5)
            reason = self.stop.reason or runner.drain_loop(session, consume, None, self.trace.poll_ms,
                                                           tick=tick, tick_s=tick_s,
                                                           until=self._until, stop_on_exit=False)
            with self.lock:
                pipeline.finish()           # the stalls still open are finished (and logged) now
                if self.intervals is not None:
                    self.intervals.end()    # what the session counted since its last interval line
                self.base = self.base.merged(self._session_figures())
                self.session = self.pipeline = None
            return self.stop.reason or reason
        finally:
            with self.lock:
                self.session = self.pipeline = None
            session.close()

    def _interval_tick(self) -> bool:
        with self.lock:
            return self.intervals.tick()

    def instance_label(self, target) -> str:
        return f"{self.host}:{target.port}" if target.port else f"{self.host}:pid{target.pid}"

    def _until(self) -> str | None:
        """Every second of the drain loop: finish stalls on the clock, export held requests, and end
        the session for a signal, or for a redis-server to follow that this session does not: a new
        one (--all) or a restarted one (its port back under a new pid). A target that exits alone
        leaves the session as it is: the kernel filters by pid, and its counts stay."""
        if self.stop.stopped:
            return self.stop.reason
        now = time.monotonic_ns()
        gone = [pid for pid in self.labels if pid not in self.dead and not os.path.isdir(f"/proc/{pid}")]
        with self.lock:
            if gone:        # its connections end now (the kernel closed its fds: no close() was traced)
                self.dead.update(gone)
                self.pipeline.feed([raw for raw in self.session.exit_records() if events.decode(raw).tgid in gone])
                for pid in gone:
                    say(f"redis-server pid {pid} ({self.labels[pid][0]}) exited")
            self.pipeline.advance(now)
            self._flush_pending(now)
        if self.next is not None:       # compiling: switch once it is ready (or has failed)
            return self.next.reason if self.next.ready.is_set() else None
        reason = self._reattach_reason()
        if reason:
            targets = self.find_targets()
            if targets:
                say(f"compiling the probes for {len(targets)} redis-server(s) ({reason}); counting goes on meanwhile")
                self.next = NextSession(self.trace, targets, reason)
        return None

    def _reattach_reason(self) -> str | None:
        if self.trace.all_instances:
            new = set(redis_pids()) - set(self.labels) - self.skipped
            if new and (self.dead or len(self.labels) < SLOTS):
                return f"new redis-server pid {', '.join(map(str, sorted(new)))}"
        for pid in self.dead:
            port = self.labels[pid][1]
            if port and port in self.followed_ports():
                try:
                    again = find_target(port=port)
                except TracerError:
                    continue
                if again.pid not in self.labels:
                    return f"redis-server on port {port} restarted as pid {again.pid}"
        return None

    def followed_ports(self) -> set:
        """Ports whose redis-server is followed across restarts: --port, and those of --pid targets."""
        return set(self.trace.ports) | self.pid_ports

    # -- pipeline callbacks (under self.lock) --------------------------------------------------------
    def _on_request(self, req) -> None:
        self.pending.append((req.reply_end_ts or req.start_ts, req.tgid, req))
        if len(self.pending) > PENDING_MAX:
            self._export_slow(*self.pending.popleft())

    def _flush_pending(self, now: int | None) -> None:
        """Requests no stall claimed within HOLD_NS: the slow ones are exported alone (None: all)."""
        while self.pending and (now is None or self.pending[0][0] < now - HOLD_NS):
            self._export_slow(*self.pending.popleft())

    def _export_slow(self, _ts, pid, req) -> None:
        if (req.latency_ns or 0) >= self.slow_ns:
            _, port = self.labels.get(pid, (None, None))
            self.spans.slow_request(req, self.host, port, self._to_wall)

    def _to_wall(self, mono_ns: int) -> int:
        return mono_ns + self.wall_offset

    def _on_sync(self, sync) -> None:
        if sync.op in ("fsync", "fdatasync") and sync.tgid in self.labels:
            self.base.instance(self.labels[sync.tgid][0]).fsync.observe(sync.duration_ns)

    def _on_stall(self, pid: int, verdict) -> None:
        label, port = self.labels.get(pid, (f"{self.host}:pid{pid}", None))
        self.base.instance(label).add_stall(verdict.class_, verdict.duration_ms / 1e3)
        print(stall_line(label, pid, verdict, self._to_wall(verdict.start_ts) / 1e9), file=self.out, flush=True)
        if self.spans is not None:
            culprits, victims = self._claim(pid, verdict)
            self.spans.stall(verdict, culprits, victims, self.host, port, pid, self._to_wall)

    def _claim(self, pid: int, verdict) -> tuple[list, list]:
        """The held requests of this stall: its culprits (the verdict's command and key, and client
        when known) and its victims (other requests of the instance in flight during the span)."""
        named = {((c.command or "").upper(), c.key, c.client or None) for c in verdict.culprits}
        culprits, victims, kept = [], [], deque()
        for item in self.pending:
            _, tgid, req = item
            end = req.reply_end_ts or req.read_end_ts
            if tgid != pid or not (req.start_ts < verdict.end_ts and end > verdict.start_ts):
                kept.append(item)
                continue
            who = ((req.command or "").upper(), req.key)
            if any(who == (c, k) and (not cl or not req.client or cl == req.client) for c, k, cl in named):
                culprits.append(req)
            elif len(victims) < VICTIM_SPANS_MAX:
                victims.append(req)
        self.pending = kept
        return culprits, victims
