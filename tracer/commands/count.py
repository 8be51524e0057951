"""`redis-tracer count`: the smallest end-to-end probe check: syscalls seen per kind."""
from __future__ import annotations

import json
from collections import Counter

from tracer.commands import cli_help
from tracer.kernel import events
from tracer.options import TraceOptions
from tracer.runtime import runner


EXAMPLES = """\
  redis-tracer count --duration 5      # syscalls the probes saw, per kind
  redis-tracer count --port 6379 --json"""


def add_parser(sub):
    p = sub.add_parser("count", help="count traced syscalls per kind (a probe smoke test)")
    runner.add_target_args(p)
    p.add_argument("--json", action="store_true")
    cli_help.add_fail_on_lost(p)
    return p


def run(args) -> int:
    options = TraceOptions.from_args(args)
    targets = runner.resolve_targets(options)
    counts: Counter = Counter()
    session = runner.attach(options, targets, count_syscalls=True)
    # the engine counts reads and writes in the kernel (it sends only some of them up as records)
    kernel_counted = session.syscall_counts() is not None

    def consume(records):
        for raw in records:
            ev = events.decode(raw)
            if kernel_counted and ev.kind in (events.READ, events.WRITE):
                continue
            name = events.KIND_NAMES.get(ev.kind, str(ev.kind))
            if ev.kind == events.ACCEPT:
                name = "accept4" if ev.flags & events.RTF_ACCEPT4 else "accept"
            elif ev.kind == events.WRITE and ev.flags & events.RTF_WRITEV:
                name = "writev"
            counts[name] += 1

    try:
        runner.drain_loop(session, consume, options.duration, options.poll_ms)
        lost = session.counters()["lost"]
        counts.update({name: n for name, n in (session.syscall_counts() or {}).items() if n})
    finally:
        session.close()
    if args.json:
        print(json.dumps({"pid": targets[0].pid, "pids": [t.pid for t in targets], "counts": dict(counts),
                          "lost": lost}))
    else:
        for name, n in sorted(counts.items()):
            print(f"{name:<10} {n}")
        print(f"{'lost':<10} {lost}")
    return cli_help.lost_gate(args, lost)
