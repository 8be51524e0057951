"""`report --hist`: the log2 histograms of `report --json`'s `histograms` field, drawn as bcc draws them."""
from __future__ import annotations

from tracer.analyze.log2 import UNIT, render
from tracer.errors import UsageError
from tracer.views.common import PHASE_LABELS


def histograms_text(histograms: dict, command: str | None = None) -> str:
    """Per command (or only `command`), then per phase of the request path."""
    commands = (histograms or {}).get("commands", {})
    unit = (histograms or {}).get("unit", UNIT)
    if command is not None:
        wanted = command.upper()
        if wanted not in commands:
            known = ", ".join(sorted(commands)) or "none"
            raise UsageError(f"--hist {command}: no such command in this recording (commands: {known})")
        commands = {wanted: commands[wanted]}
    out = []
    for name, counts in sorted(commands.items(), key=lambda kv: -sum(kv[1])):
        out.append(f"{name} latency, {sum(counts)} requests:")
        out.extend(render(counts, unit))
        out.append("")
    if not commands:
        out.extend(["no requests traced", ""])
    for phase, counts in (histograms or {}).get("phases", {}).items():
        out.append(f"phase {PHASE_LABELS.get(phase, phase)}, all commands:")
        out.extend(render(counts, unit))
        out.append("")
    return "\n".join(out).rstrip("\n")
