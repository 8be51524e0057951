"""Turn probe events into per-request timelines.

Events arrive in ring-buffer order (syscall exit order). Per connection, the request bytes
go through an incremental RESP parser; each decoded command becomes a Request that waits
for its reply, paired FIFO from the reply stream (RESP3 pushes, pub/sub messages and MONITOR
lines are not replies). Execution time comes from uprobes on call() when attached; otherwise
it is inferred from the gap between the read and the main thread's next syscall.
"""
from __future__ import annotations

import heapq
from collections import deque

from tracer import native
from tracer.decode import resp
from tracer.kernel import events
from tracer.kernel.info import info_of
from tracer.kernel.stacks import stacks_of
from tracer.decode.keyspec import secret_reply
from tracer.decode.redis_log import redis_log_of
from tracer.stitch.sched_items import sched_item
from tracer.stitch.model import (LOST_REPLY, BusySpan, Connection, FileSync, Invalidation, LossSpan, Propagated,
                                 Request)
from tracer.decode.links import (BusParser, LinkStats, SyncTransfer, bus_write_spans, looks_like_cluster_bus,
                                 reply_head_spans, unkept_spans)
from tracer.decode.resp import ReplyParser, RequestParser

MAX_LINKS = 10_000  # non-client connections kept for the report
MAX_PENDING_PER_CONN = 10_000  # replies never seen (client not reading): oldest are evicted, counted
MAX_CONNS = 100_000   # connection states kept; beyond, the least recently active are evicted, counted
EVICT_FRACTION = 0.01  # share of max_conns evicted at once (amortises the scan)
SUBSCRIBE_COMMANDS = {"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"}
UNSUBSCRIBE_HEADS = {"unsubscribe", "punsubscribe", "sunsubscribe", "subscribe", "psubscribe", "ssubscribe"}
PUSH_HEADS = {"message", "pmessage", "smessage"}
# commands _queue_request() treats specially (every other one is simply queued for its reply)
QUEUE_SPECIAL = frozenset({"PSYNC", "SYNC", "REPLCONF", "MONITOR"} | SUBSCRIBE_COMMANDS)
# commands whose reply is followed by one more confirmation per extra channel (absorbed by _pair)
ABSORBING_COMMANDS = frozenset({"UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"} | SUBSCRIBE_COMMANDS)


_REPLICA_WRITES = (b"REPLCONF", b"PSYNC", b"PING", b"AUTH")
_MASTER_REPLIES = (b"+FULLRESYNC", b"+CONTINUE", b"+PONG")


def _replica_handshake(payload: bytes, inbound: bool) -> bool:
    """Traffic of a replica's link to its master: what the replica writes in its handshake and
    acknowledgements, or the master's answers to them."""
    head = payload[:64]
    if inbound:
        return head.startswith(_MASTER_REPLIES)
    return any(word in head for word in _REPLICA_WRITES)


PROPAGATED_DELETES = frozenset({"DEL", "UNLINK"})     # how a master tells replicas a key expired or was evicted


class ConnState:
    __slots__ = ("conn", "req", "rep", "pending", "frame_arrival", "frame_read_start", "frame_wake",
                 "reply_partial_start", "last_write_end", "last_write_tid", "absorb_replies", "subscribed",
                 "monitor", "last_ts", "link", "bus", "outgoing", "seen", "partial_bytes", "stream", "transfer")

    def __init__(self, conn: Connection, show_values: bool):
        self.conn = conn
        self.req = RequestParser(show_values=show_values)
        self.rep = ReplyParser(show_values=show_values)
        self.pending: deque[Request] = deque()
        self.frame_arrival = 0        # timestamps of the read where a still-partial request frame began
        self.frame_read_start = 0
        self.frame_wake = 0
        self.reply_partial_start = 0  # write that began a reply not yet complete
        self.last_write_end = 0
        self.last_write_tid = 0
        self.absorb_replies = 0       # extra confirmations of a multi-channel SUBSCRIBE
        self.subscribed = False
        self.monitor = False
        self.last_ts = 0              # last read/write: the least recently active states are evicted first
        self.partial_bytes = 0        # bytes written so far of a reply not yet complete
        self.link = None              # LinkStats once the traffic says this is not a client
        self.bus = None               # BusParser of a cluster bus link
        self.outgoing = False         # Redis connected out (master link, cluster bus, MIGRATE)
        self.seen = False             # first payload looked at
        self.stream = None            # RequestParser of the commands Redis writes on a link (replication stream...)
        self.transfer = None          # SyncTransfer: the +FULLRESYNC and RDB a master writes a replica first


class Stats:
    __slots__ = ("requests", "unanswered", "unpaired_replies", "pushes", "evicted", "undecodable",
                 "desyncs", "accepted", "closed", "events", "stale_events", "evicted_conns",
                 "replication_handshakes", "links_dropped", "parser_errors", "lost_records", "lost_requests")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


def _noop(*_args) -> None:
    return None


def _secret_reply_pending(pending) -> bool:
    """A reply to a command in `pending` may carry secrets (keyspec.secret_reply): mask it even
    with --show-values."""
    if len(pending) > 256:
        return True     # not worth scanning: mask this write
    return any(secret_reply(req.command) for req in pending)


class Stitcher:
    def __init__(self, on_request=_noop, on_busy=_noop, on_sync=_noop, on_conn=_noop, on_accept=_noop,
                 on_counters=_noop, on_loss=_noop, on_invalidate=_noop, on_info=_noop, on_stacks=_noop,
                 on_propagated=_noop, on_sched=_noop, on_redis_log=_noop,
                 show_values: bool = False, mask_payloads: bool = False, uprobe_exec: bool = False,
                 max_conns: int = MAX_CONNS):
        self.on_request = on_request
        self.on_busy = on_busy
        self.on_sync = on_sync
        self.on_conn = on_conn      # called when a connection closes
        self.on_accept = on_accept  # called when a connection is accepted (or found at attach)
        self.on_counters = on_counters  # (lost, busy_ns, idle_ns) from a COUNTERS record
        self.on_loss = on_loss          # a LossSpan: records of a connection neither ring took
        self.on_invalidate = on_invalidate  # an Invalidation: a CLIENT TRACKING push a client got
        self.on_info = on_info          # an info.InfoAt: fields of a target's INFO, sampled by the tracer
        self.on_sched = on_sched        # a sched_items OffCpu, RunSlice or Fork (probes/sched.c, --why)
        self.on_redis_log = on_redis_log    # a redis_log.RedisLog: LATENCY LATEST and SLOWLOG at the end of a run
        self.on_stacks = on_stacks      # a stacks.StacksAt: what a stall's main thread ran on the CPU
        self.on_propagated = on_propagated  # a Propagated: a DEL/UNLINK the master sent its replicas
        self.show_values = show_values
        self.mask_payloads = mask_payloads  # collect redaction spans per record (for the recorder)
        self.conns: dict[tuple[int, int], ConnState] = {}
        self.max_conns = max_conns
        self.aof_fds: set[tuple[int, int]] = set()
        self.links: list[LinkStats] = []  # cluster bus, replica and master links seen
        self.exec_waiting: dict[int, list] = {}      # tgid -> requests read, execution end not seen
        self.exec_queue: dict[int, deque] = {}       # tgid -> requests awaiting a uprobe EXEC record
        self.uprobe_exec = uprobe_exec   # EXEC records will come: do not infer execution
        self.stats = Stats()
        self.next_conn_id = 1
        self.first_ts = 0
        self.last_ts = 0
        self.last_spans: list = []  # redaction spans of the last READ/WRITE fed (mask_payloads)
        self._dispatch = {
            events.READ: self._on_read, events.WRITE: self._on_write, events.ACCEPT: self._on_accept,
            events.CLOSE: self._on_close, events.FSYNC: self._on_fsync, events.LOOP: self._on_loop,
            events.EXEC: self._on_exec, events.FDINFO: self._on_fdinfo, events.COUNTERS: self._on_counters,
            events.EXIT: self._on_exit,
            events.LOST: self._on_lost, events.INFO: self._on_info, events.STACKS: self._on_stacks,
            events.OFFCPU: self._on_sched, events.RUNQ: self._on_sched, events.FORK: self._on_sched,
            events.REDIS: self._on_redis_log,
        }

    # -- entry points -------------------------------------------------------------
    def feed_raw(self, records) -> None:
        if _native is not None and self.__class__ is Stitcher:
            # compiled: the same loop, the plain READ/WRITE records stitched in C on these same
            # objects, every other record handed to the handlers below (tracer/stitch/_stitch_native.c)
            _native.feed_batch(self, records)
            return
        # the hot loop: feed() inlined, with everything it looks up bound once per batch
        decode = events.decode
        dispatch_get = self._dispatch.get
        exec_waiting = self.exec_waiting
        main_event = self._main_thread_event
        stats = self.stats
        fdinfo, exec_kind = events.FDINFO, events.EXEC
        for raw in records:
            ev = decode(raw)
            stats.events += 1
            ts = ev.ts_exit or ev.ts_enter
            if ts > self.last_ts:
                self.last_ts = ts
                if not self.first_ts:
                    self.first_ts = ev.ts_enter or ts
            kind = ev.kind
            handler = dispatch_get(kind)
            if handler is not None:
                if exec_waiting and kind < fdinfo and kind != exec_kind and ev.tid == ev.tgid:
                    main_event(ev)
                handler(ev)

    def feed(self, ev: events.Event) -> None:
        self.stats.events += 1
        ts = ev.ts_exit or ev.ts_enter
        if ts > self.last_ts:   # ts 0 (unknown) never is; the first known ts sets first_ts too
            self.last_ts = ts
            if not self.first_ts:
                self.first_ts = ev.ts_enter or ts
        kind = ev.kind
        handler = self._dispatch.get(kind)
        if handler is not None:
            # exec_waiting is empty unless reads wait for the main thread's next syscall
            if self.exec_waiting and kind < events.FDINFO and kind != events.EXEC and ev.tid == ev.tgid:
                self._main_thread_event(ev)
            handler(ev)

    def finish(self) -> None:
        """End of trace: requests still waiting for a reply are reported as unanswered."""
        for state in list(self.conns.values()):
            self._flush_pending(state)
        for tgid in list(self.exec_waiting):
            self._close_exec(tgid, 0)

    # -- connections -----------------------------------------------------------------
    def _new_conn(self, ev: events.Event, client: str | None) -> ConnState:
        key = (ev.tgid, ev.fd)
        old = self.conns.get(key)
        if old is not None:
            self._end_conn(old, ev.ts_enter, closed_by=None)
        elif len(self.conns) >= self.max_conns:
            self._evict_conns(ev.ts_enter)
        conn = Connection(ev.tgid, self.next_conn_id, ev.fd, client)
        self.next_conn_id += 1
        state = ConnState(conn, self.show_values)
        state.last_ts = ev.ts_exit
        self.conns[key] = state
        return state

    def _evict_conns(self, ts: int) -> None:
        """Too many connection states (CLOSE records lost, or a flood of connections): end the least
        recently active ones as if closed; their waiting requests are reported unanswered."""
        n = max(1, int(self.max_conns * EVICT_FRACTION))
        victims = heapq.nsmallest(n, self.conns.items(), key=lambda kv: kv[1].last_ts)
        for key, state in victims:
            del self.conns[key]
            self.stats.evicted_conns += 1
            self._end_conn(state, ts, closed_by="evicted")

    def _parser_failed(self, state: ConnState, ev, request: bool):
        """A parser raised (a bug): count it, give the connection a fresh parser for that direction,
        and mask the whole capture (nothing of it can be shown to be safe)."""
        self.stats.parser_errors += 1
        if request:
            state.req = RequestParser(show_values=self.show_values)
        else:
            state.rep = ReplyParser(show_values=self.show_values)
        return [], [(0, len(ev.payload))]

    def _conn_for(self, ev: events.Event) -> ConnState:
        state = self.conns.get((ev.tgid, ev.fd))
        if state is None:  # a connection older than the trace that the fd scan did not report
            state = self._new_conn(ev, None)
        return state

    def _on_accept(self, ev):
        state = self._new_conn(ev, ev.peer)
        state.conn.accept_ts = ev.ts_exit
        state.conn.established_ts = ev.aux_ts
        self.stats.accepted += 1
        self.on_accept(state.conn)

    def _on_fdinfo(self, ev):
        key = (ev.tgid, ev.fd)
        if ev.ret == events.FD_AOF:
            self.aof_fds.add(key)
        elif ev.ret == events.FD_CLIENT:
            self.aof_fds.discard(key)
            unix = ev.payload.decode(errors="replace") if ev.payload.startswith(b"unix") else None
            state = self.conns.get(key)
            if unix and state is not None and state.conn.accept_ts == ev.ts_exit:
                state.conn.client = unix    # names the unix connection its ACCEPT just opened
                return
            state = self._new_conn(ev, ev.peer or unix)
            state.outgoing = ev.payload.startswith(b"out:")

    def _on_close(self, ev):
        key = (ev.tgid, ev.fd)
        self.aof_fds.discard(key)
        state = self.conns.pop(key, None)
        if state is not None:
            self._end_conn(state, ev.ts_enter, closed_by=state.conn.closed_by or "server")

    def _on_exit(self, ev):
        """The process is gone: the kernel closed its connections (no close() was traced)."""
        for key in [k for k in self.conns if k[0] == ev.tgid]:
            self.aof_fds.discard(key)
            state = self.conns.pop(key)
            self._end_conn(state, ev.ts_enter, closed_by=state.conn.closed_by or "exit")

    def _end_conn(self, state: ConnState, ts: int, closed_by):
        if state.partial_bytes and state.pending:
            # the connection ended in the middle of a reply (client gone): report what was written
            req = state.pending.popleft()
            req.reply_bytes = state.partial_bytes
            req.reply_type = "partial"
            req.reply_start_ts = state.reply_partial_start or state.last_write_end
            req.reply_end_ts = state.last_write_end
            req.reply_thread = state.last_write_tid
            self._close_exec_for(req, req.reply_start_ts)
            self._emit(req)
        self._flush_pending(state)
        state.conn.close_ts = ts
        state.conn.closed_by = closed_by
        self.stats.closed += 1
        self.on_conn(state.conn)

    def _flush_pending(self, state: ConnState):
        while state.pending:
            req = state.pending.popleft()
            self.stats.unanswered += 1
            self._emit(req)

    # -- the request path ------------------------------------------------------------------
    def _on_read(self, ev):
        key = (ev.tgid, ev.fd)
        if key in self.aof_fds:
            return
        state = self._conn_for(ev)
        state.last_ts = ev.ts_exit
        if ev.ret == 0:
            state.conn.closed_by = "client"
            return
        if (state.link is not None or not state.seen) and self._link_traffic(state, ev, inbound=True):
            return
        if state.rep.desynced:
            # A reply larger than the capture whose end could not be computed: the client sent
            # more, so (unless it pipelines) the reply was complete at the last write.
            lost = state.rep.resync()
            if lost is not None:
                self._pair(state, lost, state.reply_partial_start or state.last_write_end,
                           state.last_write_end, state.last_write_tid)
            state.reply_partial_start = 0
            state.partial_bytes = 0     # they were that reply's: the next one starts from nothing
        if not state.req.pending:
            state.frame_arrival = ev.aux_ts
            state.frame_read_start = ev.ts_enter
            state.frame_wake = ev.aux_ts2
        try:
            commands, spans = state.req.feed(ev.payload, ev.ret)
        except Exception:  # a parser bug must not end the trace: this connection's stream starts over
            commands, spans = self._parser_failed(state, ev, True)
        if self.mask_payloads:
            self.last_spans = spans
        if not commands:
            return
        conn = state.conn
        conn_id, client = conn.conn_id, conn.client
        tgid, fd, tid = ev.tgid, ev.fd, ev.tid
        ts_enter, ts_exit, aux, aux2 = ev.ts_enter, ev.ts_exit, ev.aux_ts, ev.aux_ts2
        batch = len(commands)
        pending = state.pending
        new = []
        first = True
        for cmd in commands:
            req = Request()
            req.tgid = tgid
            req.conn_id = conn_id
            req.fd = fd
            req.client = client
            req.thread = tid
            name = cmd.name
            req.command = name if cmd.sub is None else f"{name} {cmd.sub}"
            req.key = cmd.key
            req.argc = cmd.argc
            req.request_bytes = cmd.size
            req.decode_ok = cmd.complete
            if first:
                first = False
                req.arrival_ts = state.frame_arrival or aux
                req.read_start_ts = state.frame_read_start or ts_enter
                req.wake_ts = state.frame_wake or aux2
            else:  # the rest of a pipelined batch arrived with this read
                req.arrival_ts = aux or state.frame_arrival
                req.read_start_ts = ts_enter
                req.wake_ts = aux2
            req.read_end_ts = ts_exit
            req.batch = batch
            if name == "?":
                self.stats.undecodable += 1
            if name in QUEUE_SPECIAL or len(pending) >= MAX_PENDING_PER_CONN:
                self._queue_request(state, req, cmd)
            else:
                pending.append(req)     # _queue_request's common case
            new.append(req)
        # a frame left partial by this read began here
        if state.req.pending:
            state.frame_arrival, state.frame_read_start, state.frame_wake = aux, ts_enter, aux2
        else:
            state.frame_arrival = state.frame_read_start = state.frame_wake = 0
        if self.uprobe_exec:
            self.exec_queue.setdefault(tgid, deque()).extend(new)
        else:
            self.exec_waiting.setdefault(tgid, []).append((ts_exit, tid == tgid, new))

    def _queue_request(self, state: ConnState, req: Request, cmd) -> None:
        # _on_read appends directly unless cmd.name is in QUEUE_SPECIAL or the queue is full:
        # a command handled here must be in QUEUE_SPECIAL
        if cmd.name in ("PSYNC", "SYNC", "REPLCONF"):
            # a replica (REPLCONF also catches links older than the trace by their periodic
            # REPLCONF ACK): from here the master writes the replication stream, not replies
            state.link = LinkStats(state.conn.tgid, "replica", state.conn.client)
            state.conn.kind = "replica"
            self._add_link(state.link)
            self.stats.replication_handshakes += 1
            return
        if cmd.name in SUBSCRIBE_COMMANDS:
            state.subscribed = True
        elif cmd.name == "MONITOR":
            state.monitor = True
        if len(state.pending) >= MAX_PENDING_PER_CONN:
            old = state.pending.popleft()
            self.stats.evicted += 1
            self._emit(old)
        state.pending.append(req)

    def _on_write(self, ev):
        key = (ev.tgid, ev.fd)
        if key in self.aof_fds:
            self.on_sync(FileSync(ev.tgid, ev.tid, ev.fd, "aof-write", ev.ts_enter, ev.ts_exit, ev.ret))
            return
        state = self._conn_for(ev)
        state.last_ts = ev.ts_exit
        if (state.link is not None or not state.seen) and self._link_traffic(state, ev, inbound=False):
            return
        try:
            if self.show_values and self.mask_payloads and _secret_reply_pending(state.pending):
                # CONFIG GET requirepass, ACL GETUSER...: the reply holds secrets, --show-values or not
                state.rep.show_values = False
                try:
                    replies, spans = state.rep.feed(ev.payload, ev.ret)
                finally:
                    state.rep.show_values = True
            else:
                replies, spans = state.rep.feed(ev.payload, ev.ret)
        except Exception:  # a parser bug must not end the trace
            replies, spans = self._parser_failed(state, ev, False)
        if self.mask_payloads:
            self.last_spans = spans
        start = state.reply_partial_start or ev.ts_enter
        for reply in replies:
            self._pair(state, reply, start, ev.ts_exit, ev.tid)
            start = ev.ts_enter
        pending = state.rep.pending or state.rep.desynced
        state.reply_partial_start = (state.reply_partial_start or ev.ts_enter) if pending else 0
        if pending:
            if replies:
                state.partial_bytes = max(0, ev.ret - (sum(r.size for r in replies) - state.partial_bytes))
            else:
                state.partial_bytes += ev.ret
        elif state.partial_bytes:
            state.partial_bytes = 0
        state.last_write_end = ev.ts_exit
        state.last_write_tid = ev.tid

    def _pair(self, state: ConnState, reply, start_ts: int, end_ts: int, tid: int) -> None:
        if reply.type == "push" or (state.subscribed and reply.head in PUSH_HEADS) or \
                (state.monitor and not state.pending):
            self.stats.pushes += 1
            if reply.keys is not None:
                conn = state.conn
                self.on_invalidate(Invalidation(conn.tgid, conn.client or f"conn#{conn.conn_id}", reply.keys,
                                                end_ts))
            return
        if state.absorb_replies and reply.head in UNSUBSCRIBE_HEADS:
            state.absorb_replies -= 1
            return
        if not state.pending:
            if state.subscribed and reply.head in UNSUBSCRIBE_HEADS:
                return  # UNSUBSCRIBE without arguments confirms every channel
            self.stats.unpaired_replies += 1
            return
        req = state.pending.popleft()
        if req.command in ABSORBING_COMMANDS:
            state.absorb_replies += max(0, req.argc - 2)
        req.reply_bytes = reply.size
        req.reply_type = reply.type
        req.reply_error = reply.error
        if reply.detail is not None:
            req.reply_detail = reply.detail
        req.reply_start_ts = start_ts
        req.reply_end_ts = end_ts
        req.reply_thread = tid
        if not req.exec_end_ts and self.exec_waiting:
            self._close_exec_for(req, start_ts)
        state.conn.requests += 1
        self.stats.requests += 1    # _emit(), inlined
        self.on_request(req)

    def _emit(self, req: Request) -> None:
        self.stats.requests += 1
        self.on_request(req)

    # -- execution ---------------------------------------------------------------------------
    def _main_thread_event(self, ev) -> None:
        """The main thread made a syscall: the commands it read before have finished executing."""
        waiting = self.exec_waiting.get(ev.tgid)
        if waiting:
            # a read whose wake-up is newer than the batch means the loop slept in between: unknown end
            slept = ev.kind == events.READ and ev.aux_ts2 and ev.aux_ts2 > waiting[-1][0]
            self._close_exec(ev.tgid, 0 if slept else ev.ts_enter)

    def _close_exec(self, tgid: int, end_ts: int) -> None:
        for read_end, on_main, batch in self.exec_waiting.pop(tgid, ()):
            if not on_main or not end_ts or end_ts < read_end:
                continue  # read by an IO thread: execution happened later on the main thread
            if len(batch) == 1:
                req = batch[0]
                if not req.exec_end_ts:
                    req.exec_start_ts = read_end
                    req.exec_end_ts = end_ts
                continue
            step = (end_ts - read_end) / len(batch)
            for i, req in enumerate(batch):
                if not req.exec_end_ts:
                    req.exec_start_ts = int(read_end + i * step)
                    req.exec_end_ts = int(read_end + (i + 1) * step)

    def _close_exec_for(self, req: Request, reply_start: int) -> None:
        """A reply is being written before the main thread showed another syscall (an IO thread
        wrote it): execution ended before the reply began."""
        if req.exec_end_ts or self.uprobe_exec:
            return
        waiting = self.exec_waiting.get(req.tgid)
        if waiting and req.thread == req.tgid:
            self._close_exec(req.tgid, reply_start)

    def _on_exec(self, ev) -> None:
        self.uprobe_exec = True
        queue = self.exec_queue.get(ev.tgid)
        if not queue:
            return  # a command we did not see read (before the trace, or from a replica stream)
        req = queue.popleft()
        req.exec_start_ts = ev.ts_enter
        req.exec_end_ts = ev.ts_exit
        req.exec_source = "uprobe"

    # -- other threads and the loop ----------------------------------------------------------
    def _on_fsync(self, ev) -> None:
        op = "fdatasync" if ev.flags & events.RTF_FDATASYNC else "fsync"
        self.on_sync(FileSync(ev.tgid, ev.tid, ev.fd, op, ev.ts_enter, ev.ts_exit))

    # -- connections that are not clients -------------------------------------------------------
    def _link_traffic(self, state: ConnState, ev, inbound: bool) -> bool:
        """True when the event belongs to a non-client link (and was accounted there)."""
        if state.link is None:
            state.seen = True
            payload = ev.payload
            if looks_like_cluster_bus(payload):
                kind = "cluster-bus"
                state.bus = BusParser()
            elif state.outgoing:
                kind = "master-link" if _replica_handshake(payload, inbound) else "outgoing"
            else:
                return False
            state.link = LinkStats(state.conn.tgid, kind, state.conn.client)
            state.conn.kind = kind
            self._add_link(state.link)
        link = state.link
        if link.kind == "outgoing" and _replica_handshake(ev.payload, inbound):
            # the first event seen may not say it (a read, or a write before attaching): the
            # replica's REPLCONF ACK every second, or the master's stream replies, do
            link.kind = state.conn.kind = "master-link"
        if inbound:
            link.bytes_in += ev.ret
        else:
            link.bytes_out += ev.ret
            link.writes += 1
            took = ev.ts_exit - ev.ts_enter
            link.write_ns += took
            if took > link.write_max_ns:
                link.write_max_ns = took
        # a recording keeps of link bytes what a replay needs (names, keys, headers): values and secrets
        # travel on links too (the stream, the RDB, masterauth, MIGRATE's AUTH and RESTORE, PUBLISH)
        spans = None
        if state.bus is not None:
            if inbound:
                for mtype, sender, _size in state.bus.feed(ev.payload, ev.ret):
                    link.messages[mtype] = link.messages.get(mtype, 0) + 1
                    if sender and len(link.senders) < 1000:
                        link.senders.add(sender)
                if self.mask_payloads:
                    spans = unkept_spans(state.bus.heads, len(ev.payload))
            elif self.mask_payloads:
                spans = bus_write_spans(ev.payload)
        elif link.kind == "replica":
            if not inbound:
                spans = self._replication_stream(state, ev)
            else:
                if state.transfer is not None:
                    state.transfer.replica_spoke()
                spans = [(0, len(ev.payload))]
        elif self.mask_payloads:    # a link Redis opened: master link (on a replica), MIGRATE...
            spans = self._commands_written(state, ev)[1] if not inbound else reply_head_spans(ev.payload)
        if self.mask_payloads:
            self.last_spans = spans
        return True

    def _commands_written(self, state: ConnState, ev, offset: int = 0):
        """The commands Redis wrote on a link from byte `offset` of this write, and the spans of
        their values and secrets (keys and names kept); everything after `offset` masked when the
        parser fails."""
        if state.stream is None:
            state.stream = RequestParser(show_values=False)
        try:
            commands, spans = state.stream.feed(ev.payload[offset:] if offset else ev.payload, ev.ret - offset)
        except Exception:   # a parser bug must not end the trace: the stream is read afresh
            state.stream = RequestParser(show_values=False)
            return [], [(offset, len(ev.payload) - offset)]
        if offset:
            spans = [(off + offset, length) for off, length in spans]
        return commands, spans

    def _replication_stream(self, state: ConnState, ev) -> list:
        """The deletions in what a master writes to a replica (keys only: values are never kept), and
        the spans to mask: the RDB of a full resync, the values of the stream's commands."""
        if state.transfer is None:
            state.transfer = SyncTransfer()
        offset, spans = (0, []) if state.transfer.done else state.transfer.feed(ev.payload, ev.ret)
        if offset >= ev.ret:
            return spans
        commands, stream_spans = self._commands_written(state, ev, offset)
        for cmd in commands:
            if cmd.name in PROPAGATED_DELETES and cmd.key is not None:
                self.on_propagated(Propagated(ev.tgid, ev.ts_exit, cmd.name, cmd.key))
        return spans + stream_spans

    def _add_link(self, link: LinkStats) -> None:
        if len(self.links) < MAX_LINKS:
            self.links.append(link)
        else:
            self.stats.links_dropped += 1

    def _on_counters(self, ev) -> None:
        self.on_counters(ev.ret, ev.aux_ts, ev.aux_ts2)

    def _on_info(self, ev) -> None:
        self.on_info(info_of(ev))

    def _on_sched(self, ev) -> None:
        self.on_sched(sched_item(ev))

    def _on_redis_log(self, ev) -> None:
        self.on_redis_log(redis_log_of(ev))
    def _on_stacks(self, ev) -> None:
        self.on_stacks(stacks_of(ev))

    def _on_lost(self, ev) -> None:
        """Records of this fd reached neither ring, here in time. A lost WRITE leaves the waiting
        requests without their reply, a lost READ leaves the parser inside a frame: the waiting
        requests are reported as "lost" (not unanswered, not paired with the next reply) and the
        connection's parsers start over at the next record."""
        self.stats.lost_records += ev.ret
        state = self.conns.get((ev.tgid, ev.fd))
        conn = state.conn if state is not None else None
        span = LossSpan(ev.tgid, ev.fd, conn.conn_id if conn else 0, conn.client if conn else None,
                        ev.ts_enter, ev.ts_exit, ev.ret)
        if state is not None:
            while state.pending:
                req = state.pending.popleft()
                req.reply_type = LOST_REPLY
                span.requests += 1
                self.stats.lost_requests += 1
                self._emit(req)
            state.req = RequestParser(show_values=self.show_values)
            state.rep = ReplyParser(show_values=self.show_values)
            state.reply_partial_start = 0
            state.partial_bytes = 0
        self.on_loss(span)

    def _on_loop(self, ev) -> None:
        self.on_busy(BusySpan(ev.tgid, ev.aux_ts, ev.ts_enter, ev.aux_ts2))


def _configure_native(mod) -> None:
    if resp_native is None:
        raise RuntimeError("the compiled RESP fast paths it calls are not there")
    mod.configure(Request, Request(), events.decode, events.OFFSETS,
                  (events.READ, events.WRITE, events.FDINFO, events.EXEC),
                  (resp.ST_START, resp.R_START, resp.R_DESYNC), QUEUE_SPECIAL, ABSORBING_COMMANDS, deque,
                  MAX_PENDING_PER_CONN, resp.FAST_WINDOW, events.HEADER_SIZE, resp_native.C_API)


# the compiled feed_raw loop, or None on the reference path
resp_native = resp._native
_native = native.load("tracer.stitch._stitch_native", _configure_native)
