"""The stages import one way (docs/ARCHITECTURE.md): each module imports only its own stage and the
stages below it, and no import cycle exists, lazy (function-level) imports included. Root-free."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Lowest first. A module belongs to the longest prefix listed; dashboards/ is installed as tracer.dashboards.
STAGES = [
    ("base", ("tracer", "tracer.errors", "tracer.credentials", "tracer.options", "tracer.schema", "tracer.units", "tracer.probes")),
    ("kernel", ("tracer.kernel",)),
    ("sandbox", ("tracer.sandbox",)),
    ("tracefile", ("tracer.tracefile",)),
    ("decode", ("tracer.decode",)),
    ("stitch", ("tracer.stitch",)),
    ("analyze", ("tracer.analyze",)),
    ("engine", ("tracer.engine",)),     # the kernel-side aggregation engine's reader (branch `engine`)
    ("views", ("tracer.views", "tracer.dashboards")),
    ("runtime", ("tracer.runtime",)),
    ("agent", ("tracer.agent",)),       # the headless agent: above the runtime it drives
    ("commands", ("tracer.commands",)),
    ("cli", ("tracer.cli", "tracer.__main__", "tracer.manpage")),
]
RANK = {prefix: rank for rank, (_, prefixes) in enumerate(STAGES) for prefix in prefixes}


def stage_of(module: str) -> int:
    best = None
    for prefix in RANK:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best)):
            best = prefix
    assert best is not None, f"{module} belongs to no stage: add it to STAGES"
    return RANK[best]


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in ((REPO / "tracer", "tracer"), (REPO / "dashboards", "tracer.dashboards"),
                            (REPO / "probes", "tracer.probes")):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    """Every tracer module `name` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t == "tracer" or t.startswith("tracer."))
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_import_goes_down_or_stays_in_its_stage():
    upward = [f"{mod} ({STAGES[stage_of(mod)][0]}) imports {dep} ({STAGES[stage_of(dep)][0]})"
              for mod, deps in graph().items() for dep in deps if stage_of(dep) > stage_of(mod)]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if dep == node or dep not in g:
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_graph_is_real():
    """The check sees the imports it is meant to police."""
    g = graph()
    assert "tracer.kernel.events" in g["tracer.stitch.stitcher"]
    assert "tracer.analyze.analysis" in g["tracer.runtime.pipeline"]
    assert stage_of("tracer.dashboards.live") > stage_of("tracer.analyze.diagnosis")
