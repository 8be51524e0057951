"""Plain-text output: the periodic summary for non-TTY stdout, and the final summary.

No ANSI, no box drawing: lines that read well in a log file, a pipe or a CI transcript, none wider
than WIDTH (80) columns: long lines wrap between words under a hanging indent, and a table whose rows
would not fit degrades to one `name: key value, ...` line per row.
`summary_block(snapshot, header)` is one compact block per refresh; `final_summary(report)`
is printed when a run ends and by `report` (stalls longest first, with culprit, victims, added
latency and advice; then commands, request path, slowest requests, keys, AOF, connections).
It is the one plain renderer: it reads the typed views of tracer.schema and nothing else.
"""
from __future__ import annotations

import textwrap
import time

from tracer.schema import UNDECODABLE, CommandStats, ConnStats, FsyncStats, Report, ScreenHeader, Snapshot, StallResult
from tracer.stitch.model import PHASES
from tracer.units import fmt_bytes, fmt_count, fmt_ms, fmt_pct, fmt_rate, fmt_us
from tracer.views.common import (BIG_KEY_MIN_BYTES, PHASE_LABELS, big_keys, by_count, longest_first, pattern_line,
                                 patterns_note, phase_values)

BLOCK_COMMANDS = 6
FINAL_COMMANDS = 15
FINAL_STALLS = 10
FINAL_SLOWEST = 5
FINAL_PATTERNS = 12
FINAL_LOSSES = 10
WIDTH = 80                  # every line of plain output fits an 80-column terminal or log viewer
HANGING = 4                 # a wrapped line's continuation is indented this much more


def _path_line(phases_us_total: dict, busy: float | None) -> str:
    values = phase_values(phases_us_total)
    total = sum(values.values())
    parts = [f"{PHASE_LABELS[p]} {fmt_pct(values[p] / total) if total else '-'}" for p in PHASES]
    line = " · ".join(parts)
    if busy is not None:
        line += f"; main thread busy {busy * 100:.0f}%"
    return line


def _fsync_line(f: FsyncStats) -> str:
    if not (f.count or f.aof_writes):
        return "no AOF writes or fsyncs"
    line = (f"{fmt_count(f.count)} fsyncs ({fmt_count(f.main_thread)} on the main thread), "
            f"p99 {fmt_us(f.p99_us)}, max {fmt_us(f.max_us)}")
    if f.aof_writes is not None:
        line += f"; {fmt_count(f.aof_writes)} AOF writes, max {fmt_us(f.aof_write_max_us)}"
    return line


def _conn_line(c: ConnStats) -> str:
    line = f"{fmt_count(c.accepted)} accepted"
    if c.accept_rate is not None:
        line += f" ({fmt_rate(c.accept_rate)}/s)"
    line += f", {fmt_count(c.closed)} closed"
    if c.open is not None:
        line += f", {fmt_count(c.open)} open"
    if c.accept_queue_p99_us is not None and c.accepted:
        line += f"; accept queue p99 {fmt_us(c.accept_queue_p99_us)}"
    return line


def _command_line(name: str, c: CommandStats, width: int = 10) -> str:
    """Fixed columns; fields the source does not have (a report has no rate or p99.9) are left out."""
    line = f"{name:<{width}} {fmt_count(c.count):>9}"
    if c.rps is not None:
        line += f"  {fmt_rate(c.rps):>7} req/s"
    for label, value in (("p50", c.p50_us), ("p99", c.p99_us), ("p99.9", c.p999_us), ("max", c.max_us)):
        if value is not None:
            line += f"  {label} {fmt_us(value):>7}"
    if c.exec_share is not None:
        line += f"  exec {fmt_pct(c.exec_share):>4}"
    return line


def _command_kv(name: str, c: CommandStats) -> str:
    """A command's row as `name: key value, ...`: what a table row becomes when it would not fit."""
    parts = [f"count {fmt_count(c.count)}"]
    if c.rps is not None:
        parts.append(f"{fmt_rate(c.rps)} req/s")
    parts += [f"{label} {fmt_us(value)}" for label, value in (("p50", c.p50_us), ("p99", c.p99_us),
                                                                ("p99.9", c.p999_us), ("max", c.max_us))
              if value is not None]
    if c.exec_share is not None:
        parts.append(f"exec {fmt_pct(c.exec_share)}")
    return f"{name}: " + ", ".join(parts)


def _command_rows(cmds: list, indent: str = "  ") -> list[str]:
    """Fixed columns when every row fits WIDTH, else `key: value` lines."""
    width = max([7] + [len(n) for n, _ in cmds])
    rows = [indent + _command_line(name, c, width) for name, c in cmds]
    if any(len(row) > WIDTH for row in rows):
        rows = [indent + _command_kv(name, c) for name, c in cmds]
    return rows


def fit(text: str, width: int = WIDTH) -> str:
    """Every line at most `width` columns, wrapped between words (never inside one) under a hanging indent."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip(" ")))
        out.extend(textwrap.wrap(line, width, initial_indent="", subsequent_indent=indent + " " * HANGING,
                                 break_long_words=False, break_on_hyphens=False) or [line])
    return "\n".join(out)


def _stall_head(s: StallResult) -> str:
    return (f"{fmt_ms(s.duration_ms)} {s.culprit} at +{float(s.start_s):.1f}s [{s.class_ or '?'}]: "
            f"{s.victims} victims, up to +{fmt_ms(s.victim_added_ms)}")


# -- periodic block ---------------------------------------------------------------------------------
def summary_block(snapshot: Snapshot, header: ScreenHeader, now: float | None = None) -> str:
    """One compact block for a refresh when stdout is not a terminal."""
    snap, h = snapshot, header
    stamp = time.strftime("%H:%M:%S", time.localtime(time.time() if now is None else now))
    lost = h.lost_events
    target = f"pid {h.pid}" if h.pid else ""
    if h.port:
        target += f" :{h.port}"
    lines = [f"== {stamp} +{float(h.elapsed_s or 0):.1f}s {target}  {fmt_count(snap.requests)} requests, "
             f"{fmt_rate(h.rps or 0)} req/s, lost events {fmt_count(lost)}"
             + ("  (LOST EVENTS: numbers are low)" if lost else "")]
    cmds = by_count(snap.commands)
    lines.extend(_command_rows(cmds[:BLOCK_COMMANDS]))
    if len(cmds) > BLOCK_COMMANDS:
        rest = cmds[BLOCK_COMMANDS:]
        lines.append(f"  +{len(rest)} more commands, {fmt_count(sum(c.count for _, c in rest))} requests")
    if not cmds:
        lines.append("  no requests yet")
    lines.append("  path: " + _path_line(snap.phases_us_total, snap.busy_ratio))
    stalls = longest_first(snap.stalls)
    stall_ms = h.stall_ms
    if stalls:
        lines.append(f"  stalls: {len(stalls)}, longest {_stall_head(stalls[0])}")
    else:
        lines.append("  stalls: none" + (f" >= {float(stall_ms):g} ms" if stall_ms else ""))
    lines.append("  aof: " + _fsync_line(snap.fsync))
    lines.append("  conns: " + _conn_line(snap.connections))
    lines.append("  patterns: " + (", ".join(f"{p.kind} {p.keys[0] if p.keys else ''}".strip() for p in snap.patterns)
                                   or "none"))
    return fit("\n".join(lines))


def _pattern_lines(patterns: list, patterns_input: str) -> list[str]:
    """Cache patterns with their evidence and advice (docs/ARCHITECTURE.md, cache patterns)."""
    out = [f"Cache patterns: {len(patterns)}" if patterns else "Cache patterns: none found"]
    for p in patterns[:FINAL_PATTERNS]:
        out.append(f"  - {pattern_line(p)}")
        out.extend(f"      {line}" for line in p.evidence[1:])
        if p.clients:
            out.append("      clients: " + ", ".join(p.clients))
        out.extend(f"      advice: {a}" for a in p.advice)
    if len(patterns) > FINAL_PATTERNS:
        out.append(f"  ... and {len(patterns) - FINAL_PATTERNS} more (see --json)")
    note = patterns_note(patterns_input)
    if note:
        out.append("  " + note)
    return out


# -- final summary --------------------------------------------------------------------------------
def _target_line(report: Report) -> str:
    t = report.target
    elapsed = report.elapsed_s if report.elapsed_s is not None else report.duration_s
    rps = report.rps
    if rps is None:
        rps = report.requests / elapsed if elapsed else 0
    extra = []
    if t.port:
        extra.append(f"port {t.port}")
    if t.redis_version:
        extra.append(f"redis {t.redis_version}")
    who = (f"redis-server pid {t.pid}" if t.pid else "redis-server") + (f" ({', '.join(extra)})" if extra else "")
    lost = report.lost_events
    return (f"redis-tracer: traced {who} for {float(elapsed or 0):.1f} s: "
            f"{fmt_count(report.requests)} requests ({fmt_rate(rps)} req/s), "
            f"{fmt_count(lost)} lost events" + (" -- some requests are missing from these numbers" if lost else ""))


def final_summary(report: Report) -> str:
    """The diagnosis printed at the end of a run and by `report`."""
    out = [_target_line(report), ""]
    stalls = longest_first(report.stalls)
    stall_ms = report.stall_ms
    limit = f" (main thread busy >= {float(stall_ms):g} ms)" if stall_ms else ""
    if stalls:
        out.append(f"Stalls{limit}: {len(stalls)}, longest first")
        for i, s in enumerate(stalls[:FINAL_STALLS], 1):
            out.append(f"  {i:>2}. {fmt_ms(s.duration_ms):>7}  {s.culprit}  at +{float(s.start_s):.1f}s  "
                       f"[{s.class_ or '?'}]" + (f"  client {s.client}" if s.client else ""))
            victims = f"{s.victims} requests of other clients delayed"
            if s.victims:
                victims += f", up to +{fmt_ms(s.victim_added_ms)} each"
                if s.victim_added_total_ms:
                    victims += f" (+{fmt_ms(s.victim_added_total_ms)} in all)"
            out.append(f"      victims: {victims}")
            if s.culprits[1:]:
                out.append("      also: " + ", ".join(f"{c.command or '?'} {c.key or ''}".strip()
                                                     for c in s.culprits[1:4]))
            if s.evidence:
                out.append("      evidence: " + s.evidence[0])
            out.extend(f"      on CPU: {p.describe()}" for p in (s.frames or [])[:3])
            if s.first_advice:
                out.append(f"      advice: {s.first_advice}")
        if len(stalls) > FINAL_STALLS:
            out.append(f"  ... and {len(stalls) - FINAL_STALLS} shorter stalls (see --json)")
    else:
        out.append(f"Stalls{limit}: none")
    out.append("")
    out.extend(_pattern_lines(report.patterns, report.patterns_input))
    out.append("")

    cmds = by_count(report.commands)
    if cmds:
        out.append("Commands, by count:")
        out.extend(_command_rows(cmds[:FINAL_COMMANDS]))
        if len(cmds) > FINAL_COMMANDS:
            out.append(f"  ... and {len(cmds) - FINAL_COMMANDS} more")
        unknown = report.commands.get(UNDECODABLE)
        if unknown is not None and unknown.samples:
            out.append(f"  {UNDECODABLE}: undecodable frames and unknown commands Redis refused, e.g. "
                       + ", ".join(unknown.samples))
    else:
        out.append("Commands: no requests traced")
    out.append("Request path: " + _path_line(report.phases_us_total, report.busy_ratio))

    slowest = sorted(report.slowest or [], key=lambda r: -r.latency_us)[:FINAL_SLOWEST]
    if slowest:
        out.append("Slowest recent requests:")
        for r in slowest:
            known = phase_values(r.phases)
            split = " ".join(f"{p.replace('_', '-')} {fmt_us(known[p])}" for p in PHASES if known[p] > 0)
            key = f" {r.key}" if r.key is not None else ""
            out.append(f"  {fmt_us(r.latency_us):>7}  {r.command or '?'}{key}"
                       + (f"  ({split})" if split else "") + (f"  {r.client}" if r.client else ""))
    hot = report.hot_keys
    out.append("Hot keys: " + (", ".join(f"{k} ({fmt_count(n)})" for k, n in hot[:8]) if hot else "none seen"))
    big = big_keys(report.big_keys)
    out.append("Big keys, by largest reply: " + (", ".join(f"{k} ({fmt_bytes(n)})" for k, n in big[:8]) if big
                                                 else f"none with a reply >= {fmt_bytes(BIG_KEY_MIN_BYTES)}"))
    if report.losses:
        out.append(f"Lost records: {report.loss_spans} spans, {fmt_count(report.lost_requests)} requests left "
                   "without a known reply")
        for span in report.losses[:FINAL_LOSSES]:
            who = span.client or f"fd {span.fd}"
            out.append(f"  {who} (pid {span.pid}, conn {span.conn_id or '-'}): {fmt_count(span.records)} records "
                       f"between +{span.start_s}s and +{span.end_s}s, {span.requests} requests affected")
    out.append("AOF/fsync: " + _fsync_line(report.fsync))
    out.append("Connections: " + _conn_line(report.connections))
    return fit("\n".join(out))
