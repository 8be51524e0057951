"""The human form of a report: the same facts as `report --json`, as rich tables."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _ms(us) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:.2f}ms" if us >= 1000 else f"{us:.0f}µs"


def print_report(report: dict, header: dict | None = None, console: Console | None = None) -> None:
    console = console or Console()
    t = report["target"]
    console.print(f"[bold]redis-tracer report[/] pid {t['pid']} port {t['port']} redis {t['redis_version'] or '?'}"
                  f" — {report['duration_s']:.1f}s, {report['requests']} requests, "
                  + (f"[red]{report['lost_events']} lost events[/]" if report["lost_events"] else "0 lost events"))

    cmds = Table(title="Commands", title_justify="left")
    for col in ("command", "count", "p50", "p99", "max"):
        cmds.add_column(col, justify="left" if col == "command" else "right")
    for name, c in sorted(report["commands"].items(), key=lambda kv: -kv[1]["count"]):
        cmds.add_row(name, str(c["count"]), _ms(c["p50_us"]), _ms(c["p99_us"]), _ms(c["max_us"]))
    console.print(cmds)
    samples = (report["commands"].get("?") or {}).get("samples")
    if samples:
        console.print("?: undecodable frames and unknown commands Redis refused, e.g. "
                      + ", ".join(escape(s) for s in samples))

    if report["stalls"]:
        stalls = Table(title="Main-thread stalls (longest first)", title_justify="left")
        for col in ("at", "duration", "class", "culprit", "client", "victims", "added (max)", "advice"):
            stalls.add_column(col)
        for s in report["stalls"]:
            culprit = s["command"] + (f" {s['key']}" if s.get("key") else "")
            advice = (s.get("advice") or [""])[0]
            stalls.add_row(f"{s['start_s']:.3f}s", f"{s['duration_ms']:.1f}ms", s.get("class", "?"), culprit,
                           s.get("client") or "-", str(s["victims"]), f"{s['victim_added_ms']:.1f}ms", advice)
        console.print(stalls)
    else:
        console.print("No main-thread stalls above the threshold.")

    f = report["fsync"]
    c = report["connections"]
    console.print(f"fsync: {f['count']} ({f['main_thread']} on the main thread), p99 {_ms(f['p99_us'])}, "
                  f"max {_ms(f['max_us'])}   connections: {c['accepted']} accepted, {c['closed']} closed")
    losses = report.get("losses") or []
    if losses:
        console.print(f"[red]lost records[/] ({report.get('loss_spans', len(losses))} spans, "
                      f"{report.get('lost_requests', 0)} requests left without a known reply):")
        for span in losses[:10]:
            who = span["client"] or f"fd {span['fd']}"
            console.print(f"  {who} (pid {span['pid']}, conn {span['conn_id'] or '-'}): {span['records']} records "
                          f"between {span['start_s']}s and {span['end_s']}s, {span['requests']} requests affected")
    if report.get("hot_keys"):
        console.print("hot keys: " + ", ".join(f"{k} ({n})" for k, n in report["hot_keys"][:5]))
    if report.get("big_keys"):
        console.print("big keys: " + ", ".join(f"{k} ({n} B)" for k, n in report["big_keys"][:5]))
