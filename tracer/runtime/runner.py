"""What every tracing command shares: target options, attaching, the drain loop, clean stops."""
from __future__ import annotations

import argparse
import signal
import sys
import time

from tracer.credentials import add_credential_args, explain_refusal
from tracer.errors import Interrupted, TracerError, UsageError
from tracer.kernel.bpf_session import ProbeSession
from tracer.kernel.privileges import require_tracing_privileges
from tracer.kernel.stacks import SamplingConfig
from tracer.kernel.target import Target, find_target, query_redis_info, redis_pids
from tracer.options import (CAPTURE_BYTES, ENGINE_BUDGET, ENGINE_SAMPLE, MODE, ONCPU, POLL_MS, RINGBUF_PAGES,
                             REFRESH_HZ, STALL_MS, WHY, TraceOptions)
from tracer.runtime.info_sampler import InfoSampler

# TLS is decrypted inside redis-server, after the read() the probes see (docs/SECURITY.md)
TLS_TRAFFIC_NOTE = ("--tls: the tracer's own queries use TLS; clients' TLS traffic is encrypted in the syscalls the "
                    "probes see, so its commands cannot be decoded (trace a plaintext port or the unix socket)")
COUNTERS_S = 1.0  # kernel counters (lost records, loop busy/idle) join the stream this often


def add_target_args(parser, duration_default=None) -> None:
    parser.add_argument("--pid", type=int, action="append", metavar="PID",
                        help="pid of a redis-server to trace (repeat for several)")
    parser.add_argument("--port", type=port_list, metavar="PORT[,PORT...]",
                        help="TCP port(s) of the redis-server(s) to trace (found via /proc), e.g. 7000,7001,7002")
    parser.add_argument("--all", action="store_true", help="trace every redis-server on this host")
    parser.add_argument("--duration", type=float, default=duration_default, metavar="S",
                        help="stop after S seconds (default: until Ctrl-C/SIGTERM)")
    parser.add_argument("--exec-probes", action="store_true",
                        help="uprobes on redis-server's call() for exact execution time (costs throughput)")
    parser.add_argument("--why", action=argparse.BooleanOptionalAction, default=None,
                        help="explain stalls by what the main thread did: off its CPU too (sched probes: who ran "
                             "instead, kernel waits, forks, page faults; default: "
                             f"{'on' if WHY else 'off'}, on in diagnose); the on-CPU stack samples of long busy "
                             f"spans are {'on' if ONCPU else 'off'} unless --no-why")
    parser.add_argument("--capture-bytes", type=int, default=CAPTURE_BYTES, metavar="N",
                        help=f"bytes of each read/write copied for RESP decoding (power of two, default "
                             f"{CAPTURE_BYTES})")
    parser.add_argument("--poll-ms", type=int, default=POLL_MS,
                        help=f"ring buffer drain interval (default {POLL_MS}; a full batch is drained again at once)")
    parser.add_argument("--ringbuf-pages", type=int, default=RINGBUF_PAGES, metavar="N",
                        help=f"ring buffer size in 4 KiB pages (power of two, default {RINGBUF_PAGES} = "
                             f"{RINGBUF_PAGES * 4 // 1024} MiB); records "
                             "that do not fit are dropped and counted as lost events")
    parser.add_argument("--show-values", action="store_true",
                        help="show values on screen and in files (off: values are masked; secrets always are; "
                             "needs --full)")
    add_mode_args(parser)
    add_credential_args(parser)
    add_ebpf_arg(parser)


def add_ebpf_arg(parser) -> None:
    parser.add_argument("--ebpf", action="store_true",
                        help="print the BPF C program and its compile flags for these options, then exit "
                             "(nothing is attached)")


def print_program(options: TraceOptions, targets: list[Target], out=None) -> int:
    """`--ebpf`: the probes' C text with the flags bcc would compile it with, as bcc's tools print theirs."""
    try:
        from bcc import BPF
    except ImportError:
        BPF = None      # the optional-syscall flags need bcc; the rest is known without it
    session = new_session(options, targets)
    text, cflags = session.program(BPF)
    out = out or sys.stdout
    pids = " ".join(str(t.pid) for t in targets)
    out.write(f"/* redis-tracer: probes {', '.join(session.probes)}; "
              f"{f'redis-server pid {pids}' if pids else 'no target: no pid filter'}; compiled by bcc with:\n")
    out.write("".join(f" *   {flag}\n" for flag in cflags) + " */\n")
    out.write(text if text.endswith("\n") else text + "\n")
    return 0


def ebpf_targets(options: TraceOptions) -> list[Target]:
    """The targets `--ebpf` shows the program for: those named, else the only one running, else none
    (the program is then shown without a pid filter)."""
    if options.pids or options.ports or options.all_instances:
        return resolve_targets(options)
    try:
        return resolve_targets(options)
    except TracerError:
        return []


def add_mode_args(parser) -> None:
    """--full / --engine (options.MODE is the default)."""
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--full", dest="mode", action="store_const", const="full",
                       help="every request's bytes go up and are stitched in user space" +
                            (" (the default)" if MODE == "full" else ""))
    modes.add_argument("--engine", dest="mode", action="store_const", const="engine",
                       help="always-on mode: the kernel parses and aggregates; every request goes up while an "
                            f"instance serves fewer than {ENGINE_BUDGET}/s, beyond that only slow, stalled, victim "
                            f"and 1-in-{ENGINE_SAMPLE} sampled ones (slowest requests, hot keys and cache patterns "
                            "are then estimates)" + (" (the default)" if MODE == "engine" else ""))


class StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes its drain and everything is flushed."""

    def __init__(self):
        self.stopped = False
        self.reason = ""
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame):
        self.stopped = True
        self.reason = signal.Signals(signum).name

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def port_list(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"ports are numbers separated by commas, not {text!r}") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of TCP ports")
    return ports


def add_analysis_args(parser, refresh: bool = True) -> None:
    parser.add_argument("--stall-ms", type=float, default=STALL_MS, metavar="MS",
                        help=f"a main-thread busy span this long is a stall (default {STALL_MS:g})")
    if refresh:
        parser.add_argument("--refresh", type=float, default=REFRESH_HZ, metavar="HZ",
                            help=f"screen refreshes per second (default {REFRESH_HZ:g}); without a terminal, "
                                 "one summary block is printed per refresh")


def resolve_targets(options: TraceOptions) -> list[Target]:
    """Every redis-server named by --pid/--port/--all (or the only one running), each asked for
    its version and config before the probes attach, so our own connection is not traced."""
    # First: without the capabilities /proc of a root-owned redis-server is unreadable and the
    # target search would fail with a misleading "nothing listens on port N".
    require_tracing_privileges()
    credentials = options.credentials
    pids, ports = options.pids, options.ports
    if options.all_instances:
        if pids or ports:
            raise UsageError("--all traces every redis-server: do not combine it with --pid/--port")
        targets = [find_target(pid=pid) for pid in redis_pids()]
        if not targets:
            raise TracerError("no redis-server is running", "start one, or pass --pid/--port")
    elif pids or ports:
        targets = [find_target(pid=pid) for pid in pids] + [find_target(port=port) for port in ports]
    else:
        targets = [find_target(socket=credentials.socket)]
    unique: dict[int, Target] = {}
    for t in targets:
        unique.setdefault(t.pid, t)
    targets = list(unique.values())
    if credentials.tls is not None:
        print(f"redis-tracer: {TLS_TRAFFIC_NOTE}", file=sys.stderr)
    for t in targets:
        if t.note:      # found in another network namespace, or behind a forwarding proxy
            print(f"redis-tracer: {t.note}", file=sys.stderr)
        t.info = query_redis_info(t, credentials)
        refusal = explain_refusal(str(t.info.get("error", "")), credentials)
        if refusal is not None:
            print(f"redis-tracer: {t.describe()} did not say its version and config ({t.info['error'].split()[0]}: "
                  f"it {refusal[0]}; tracing works without): {refusal[1]}", file=sys.stderr)
    return targets


def new_session(options: TraceOptions, targets: list[Target], count_syscalls: bool = False) -> ProbeSession:
    """The probe session of options.mode: the full probe set, or the engine's (tracer/engine).
    count_syscalls: the engine counts every read and write (`count`; the full path records each)."""
    sampling = SamplingConfig(stall_ms=options.stall_ms) if options.oncpu else None
    if options.mode == "engine":
        from tracer.engine.session import EngineConfig, EngineSession

        return EngineSession(targets, EngineConfig(stall_ms=options.stall_ms, slow_ms=options.slow_ms,
                                                      sample=ENGINE_SAMPLE, budget=ENGINE_BUDGET,
                                                      commands=options.commands, count_syscalls=count_syscalls),
                             capture_max=options.capture_bytes, ringbuf_pages=options.ringbuf_pages,
                             sampling=sampling, credentials=options.credentials, why=options.why)
    return ProbeSession(targets, exec_probes=options.exec_probes, capture_max=options.capture_bytes,
                        ringbuf_pages=options.ringbuf_pages, sampling=sampling,
                        why=options.why)


def attach(options: TraceOptions, targets: list[Target], on_session=None,
           count_syscalls: bool = False) -> ProbeSession:
    """on_session(session): called with the new session before it compiles (the agent gates its
    programs' attach there, to switch from a running session)."""
    session = new_session(options, targets, count_syscalls)
    if on_session is not None:
        on_session(session)
    # connected before the attach, which marks its fds ignored; sampled by drain_loop's side
    sampler = InfoSampler(targets, options.credentials, options.info_every_s)
    session.ignore_fds |= sampler.server_fds
    try:
        session.attach(progress=lambda message: print(message, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        # Ctrl-C while bcc compiles and loads: detach what is attached and say so (exit 130)
        session.close()
        sampler.stop()
        raise Interrupted("interrupted while attaching: nothing was traced") from None
    except BaseException:
        session.close()
        sampler.stop()
        raise
    session.info_sampler = sampler
    sampler.start()
    print(f"attached: {session.describe()} ({session.times.describe()})", file=sys.stderr, flush=True)
    return session


def drain_loop(session: ProbeSession, consume, duration: float | None, poll_ms: int,
               tick=None, tick_s: float = 0.5, until=None, stop_on_exit: bool = True) -> str:
    """Drain until stopped; `consume(records)` gets every batch, `tick()` runs every tick_s;
    `until()`, asked every COUNTERS_S, returns a reason to stop (the agent: a new redis-server) or None;
    stop_on_exit: stop when a target exits (the agent decides that in until()).
    Returns why it stopped."""
    stop = StopFlag()
    sampler = getattr(session, "info_sampler", None)     # INFO samples join the stream as they come
    deadline = time.monotonic() + duration if duration else None
    next_tick = time.monotonic() + tick_s
    next_counters = time.monotonic() + COUNTERS_S
    interval = max(1, poll_ms) / 1000.0
    reason = "stopped"
    try:
        while True:
            consume(session.drain())
            if sampler is not None and sampler.records:
                consume(sampler.take())
            now = time.monotonic()
            if now >= next_counters:
                consume([session.counters_record()] + aggregates(session))
                next_counters = now + COUNTERS_S
                wanted = until() if until is not None else None
                if wanted:
                    reason = wanted
                    break
            if tick is not None and now >= next_tick:
                consume(aggregates(session))    # the engine's histograms, once per refresh
                if tick():                      # a tick may end the run (live --count)
                    reason = "count"
                    break
                next_tick += tick_s             # steady intervals (live --interval), not drifting ones
                if next_tick <= now:
                    next_tick = now + tick_s
            if stop.stopped:
                reason = stop.reason
                break
            if deadline and now >= deadline:
                reason = "duration"
                break
            if stop_on_exit and not session.targets_alive():
                reason = "target exited"
                print("redis-tracer: the traced redis-server exited; stopping", file=sys.stderr)
                break
            if not getattr(session, "backlog", False):  # a capped drain: go on at once
                # sleep one interval, but wake for the next tick or the deadline
                pause = interval
                if tick is not None:
                    pause = min(pause, next_tick - now)
                if deadline:
                    pause = min(pause, deadline - now)
                if pause > 0:
                    time.sleep(pause)
        time.sleep(0.01)
        # what the probes wrote up to now (not what they keep writing while we drain it)
        mark = session.ring_mark() if hasattr(session, "ring_mark") else None
        while True:
            consume(session.drain())
            if not getattr(session, "backlog", False) or session.ring_passed(mark):
                break
        if hasattr(session, "held_back"):
            consume(session.held_back())
        if sampler is not None:
            consume(sampler.stop())
        consume([session.counters_record()] + aggregates(session))
        if reason == "target exited":
            consume(session.exit_records())   # its connections end here: none is left "open"
        if hasattr(session, "counters"):
            print(ring_health(session.counters()), file=sys.stderr, flush=True)
        profiler = getattr(session, "profiler", None)
        if profiler is not None:
            print(profiler.describe(), file=sys.stderr, flush=True)
    finally:
        stop.restore()
    return reason


def aggregates(session) -> list:
    """The kernel aggregates as records of the stream (the engine's histograms; none in full mode)."""
    read = getattr(session, "aggregate_records", None)
    return read() if read is not None else []


def ring_health(c: dict) -> str:
    """One line on how the ring buffer took the probes' records (kernel counters of a session)."""
    refused = c["refused_full"] + c["refused_room"]
    kinds = ", ".join(f"{n} {kind}" for kind, n in c.get("refused_by_kind", {}).items())
    return (f"ring: {refused} records refused ({c['refused_full']} ring full, {c['refused_room']} with room, "
            f"most unread bytes at a refusal {c['refused_avail_max']}), {c['rescued']} taken by the rescue ring, "
            f"{c['lost']} lost" + (f", consumer position moved by someone else {c['consumer_moved']} times"
                                   if c.get("consumer_moved") else "") + (f"; refused: {kinds}; longest refusal {c['refused_ns_max'] / 1000:.1f}us after "
                                   f"the record's end; positions at the last: consumer {c['refused_cons_pos']} producer "
                                   f"{c['refused_prod_pos']}" if refused else ""))

