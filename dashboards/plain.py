"""Plain-text output: the periodic summary for non-TTY stdout, and the final summary.

No ANSI, no box drawing: lines that read well in a log file, a pipe or a CI transcript.
`summary_block(snapshot, header)` is one compact block per refresh; `final_summary(report)`
is printed when a live/diagnose/demo run ends (stalls longest first, with culprit, victims,
added latency and advice; then commands, request path, slowest requests, keys, AOF, connections).
"""
from __future__ import annotations

import time

from tracer.dashboards.live import (BIG_KEY_MIN_BYTES, PHASE_LABELS, PHASES, _phase_pairs, as_share, first_advice, fmt_bytes, fmt_count,
                             fmt_ms, fmt_pct, fmt_rate, fmt_us, stall_culprit, victims_count)

BLOCK_COMMANDS = 6
FINAL_COMMANDS = 15
FINAL_STALLS = 10
FINAL_SLOWEST = 5


def _by_count(commands: dict) -> list:
    return sorted((commands or {}).items(), key=lambda kv: (-(kv[1].get("count") or 0), kv[0]))


def _longest_first(stalls) -> list:
    return sorted(stalls or [], key=lambda s: (-(s.get("duration_ms") or 0), s.get("start_s") or 0))


def _path_line(snap: dict) -> str:
    totals = snap.get("phases_us_total") or {}
    values = {p: float(totals.get(p) or 0) for p in PHASES}
    total = sum(values.values())
    parts = [f"{PHASE_LABELS[p]} {fmt_pct(values[p] / total) if total else '-'}" for p in PHASES]
    busy = as_share(snap.get("busy_ratio"))
    line = " · ".join(parts)
    if busy is not None:
        line += f"; main thread busy {busy * 100:.0f}%"
    return line


def _fsync_line(snap: dict) -> str:
    f = snap.get("fsync") or {}
    if not (f.get("count") or f.get("aof_writes")):
        return "no AOF writes or fsyncs"
    line = (f"{fmt_count(f.get('count') or 0)} fsyncs ({fmt_count(f.get('main_thread') or 0)} on the main thread), "
            f"p99 {fmt_us(f.get('p99_us'))}, max {fmt_us(f.get('max_us'))}")
    if "aof_writes" in f:
        line += f"; {fmt_count(f.get('aof_writes') or 0)} AOF writes, max {fmt_us(f.get('aof_write_max_us'))}"
    return line


def _conn_line(snap: dict) -> str:
    c = snap.get("connections") or {}
    line = f"{fmt_count(c.get('accepted') or 0)} accepted"
    if "accept_rate" in c:
        line += f" ({fmt_rate(c.get('accept_rate') or 0)}/s)"
    line += f", {fmt_count(c.get('closed') or 0)} closed"
    if "open" in c:
        line += f", {fmt_count(c.get('open') or 0)} open"
    if "accept_queue_p99_us" in c and c.get("accepted"):
        line += f"; accept queue p99 {fmt_us(c.get('accept_queue_p99_us'))}"
    return line


def _command_line(name: str, c: dict, width: int = 10) -> str:
    """Fixed columns; fields the source does not have (a report has no rate or p99.9) are left out."""
    line = f"{name:<{width}} {fmt_count(c.get('count')):>9}"
    if "rps" in c:
        line += f"  {fmt_rate(c.get('rps')):>7} req/s"
    for label, field in (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us"), ("max", "max_us")):
        if field in c:
            line += f"  {label} {fmt_us(c.get(field)):>7}"
    if "exec_share" in c:
        line += f"  exec {fmt_pct(as_share(c.get('exec_share'))):>4}"
    return line


def _stall_head(s: dict) -> str:
    added = s.get("victim_added_ms")
    start = s.get("start_s")
    when = "" if start is None else f" at +{float(start):.1f}s"
    return (f"{fmt_ms(s.get('duration_ms'))} {stall_culprit(s)}{when} [{s.get('class') or '?'}]: "
            f"{victims_count(s)} victims" + ("" if added is None else f", up to +{fmt_ms(added)}"))


# -- periodic block ---------------------------------------------------------------------------------
def summary_block(snapshot: dict, header: dict | None = None, now: float | None = None) -> str:
    """One compact block for a refresh when stdout is not a terminal."""
    snap = snapshot or {}
    h = header or {}
    stamp = time.strftime("%H:%M:%S", time.localtime(time.time() if now is None else now))
    elapsed = h.get("elapsed_s", snap.get("elapsed_s")) or 0
    rps = h.get("rps", snap.get("rps")) or 0
    lost = h.get("lost_events", snap.get("lost_events")) or 0
    target = f"pid {h['pid']}" if h.get("pid") else ""
    if h.get("port"):
        target += f" :{h['port']}"
    lines = [f"== {stamp} +{float(elapsed):.1f}s {target}  {fmt_count(snap.get('requests') or 0)} requests, "
             f"{fmt_rate(rps)} req/s, lost events {fmt_count(lost)}" + ("  (LOST EVENTS: numbers are low)" if lost else "")]
    cmds = _by_count(snap.get("commands"))
    width = max([7] + [len(n) for n, _ in cmds[:BLOCK_COMMANDS]])
    for name, c in cmds[:BLOCK_COMMANDS]:
        lines.append("  " + _command_line(name, c, width))
    if len(cmds) > BLOCK_COMMANDS:
        rest = cmds[BLOCK_COMMANDS:]
        lines.append(f"  +{len(rest)} more commands, {fmt_count(sum(c.get('count') or 0 for _, c in rest))} requests")
    if not cmds:
        lines.append("  no requests yet")
    lines.append("  path: " + _path_line(snap))
    stalls = _longest_first(snap.get("stalls"))
    stall_ms = h.get("stall_ms")
    if stalls:
        lines.append(f"  stalls: {len(stalls)}, longest {_stall_head(stalls[0])}")
    else:
        lines.append("  stalls: none" + (f" >= {float(stall_ms):g} ms" if stall_ms else ""))
    lines.append("  aof: " + _fsync_line(snap))
    lines.append("  conns: " + _conn_line(snap))
    return "\n".join(lines)


# -- final summary --------------------------------------------------------------------------------
def _target_line(report: dict) -> str:
    t = report.get("target") or {}
    if isinstance(t, list):
        t = t[0] if t else {}
    elapsed = report.get("elapsed_s", report.get("duration_s")) or 0
    rps = report.get("rps")
    if rps is None:
        rps = (report.get("requests") or 0) / elapsed if elapsed else 0
    bits = []
    if t.get("pid"):
        bits.append(f"redis-server pid {t['pid']}")
    extra = []
    if t.get("port"):
        extra.append(f"port {t['port']}")
    if t.get("redis_version"):
        extra.append(f"redis {t['redis_version']}")
    who = (bits[0] if bits else "redis-server") + (f" ({', '.join(extra)})" if extra else "")
    lost = report.get("lost_events") or 0
    return (f"redis-tracer: traced {who} for {float(elapsed):.1f} s: "
            f"{fmt_count(report.get('requests') or 0)} requests ({fmt_rate(rps)} req/s), "
            f"{fmt_count(lost)} lost events" + (" -- some requests are missing from these numbers" if lost else ""))


def final_summary(report: dict) -> str:
    """The diagnosis printed at the end of a run, from Analyzer.report(...) (or a snapshot)."""
    report = report or {}
    out = [_target_line(report), ""]
    stalls = _longest_first(report.get("stalls"))
    stall_ms = report.get("stall_ms") or (report.get("config") or {}).get("stall_ms")
    limit = f" (main thread busy >= {float(stall_ms):g} ms)" if stall_ms else ""
    if stalls:
        out.append(f"Stalls{limit}: {len(stalls)}, longest first")
        for i, s in enumerate(stalls[:FINAL_STALLS], 1):
            added = s.get("victim_added_ms")
            start = s.get("start_s")
            when = "" if start is None else f"  at +{float(start):.1f}s"
            out.append(f"  {i:>2}. {fmt_ms(s.get('duration_ms')):>7}  {stall_culprit(s)}{when}  "
                       f"[{s.get('class') or '?'}]" + (f"  client {s['client']}" if s.get("client") else ""))
            victims = f"{victims_count(s)} requests of other clients delayed"
            if added is not None and victims_count(s):
                victims += f", up to +{fmt_ms(added)} each"
                total = s.get("victim_added_total_ms")
                if total:
                    victims += f" (+{fmt_ms(total)} in all)"
            out.append(f"      victims: {victims}")
            culprits = s.get("culprits") or []
            others = [c for c in culprits[1:] if isinstance(c, dict)]
            if others:
                out.append("      also: " + ", ".join(
                    f"{c.get('command') or '?'} {c.get('key') or ''}".strip() for c in others[:3]))
            evidence = s.get("evidence")
            if evidence:
                out.append("      evidence: " + (evidence[0] if isinstance(evidence, (list, tuple)) else str(evidence)))
            advice = first_advice(s)
            if advice:
                out.append(f"      advice: {advice}")
        if len(stalls) > FINAL_STALLS:
            out.append(f"  ... and {len(stalls) - FINAL_STALLS} shorter stalls (see --json)")
    else:
        out.append(f"Stalls{limit}: none")
    out.append("")

    cmds = _by_count(report.get("commands"))
    if cmds:
        out.append("Commands, by count:")
        width = max([7] + [len(n) for n, _ in cmds[:FINAL_COMMANDS]])
        for name, c in cmds[:FINAL_COMMANDS]:
            out.append("  " + _command_line(name, c, width))
        if len(cmds) > FINAL_COMMANDS:
            out.append(f"  ... and {len(cmds) - FINAL_COMMANDS} more")
    else:
        out.append("Commands: no requests traced")
    out.append("Request path: " + _path_line(report))

    slowest = sorted(report.get("slowest") or [], key=lambda r: -(r.get("latency_us") or 0))[:FINAL_SLOWEST]
    if slowest:
        out.append("Slowest recent requests:")
        for r in slowest:
            phases = _phase_pairs(r.get("phases"))
            known = {p: float(phases.get(p) or 0) for p in PHASES}
            total = sum(known.values())
            split = " ".join(f"{p.replace('_', '-')} {fmt_us(known[p])}" for p in PHASES if known[p] > 0) if total else ""
            key = f" {r['key']}" if r.get("key") is not None else ""
            out.append(f"  {fmt_us(r.get('latency_us')):>7}  {r.get('command') or '?'}{key}"
                       + (f"  ({split})" if split else "") + (f"  {r['client']}" if r.get("client") else ""))
    hot = report.get("hot_keys") or []
    big = report.get("big_keys") or []
    out.append("Hot keys: " + (", ".join(f"{k} ({fmt_count(n)})" for k, n in hot[:8]) if hot else "none seen"))
    big = [kv for kv in big if (kv[1] or 0) >= BIG_KEY_MIN_BYTES]
    out.append("Big keys, by largest reply: " + (", ".join(f"{k} ({fmt_bytes(n)})" for k, n in big[:8]) if big
                                                 else f"none with a reply >= {fmt_bytes(BIG_KEY_MIN_BYTES)}"))
    out.append("AOF/fsync: " + _fsync_line(report))
    out.append("Connections: " + _conn_line(report))
    return "\n".join(out)
