"""The live dashboard: one rich renderable built from a Snapshot and a ScreenHeader (tracer.schema).

    dash = Dashboard()
    live.update(dash.render(snapshot, header), refresh=True)

The renderable lays itself out when rich renders it, from the width and height it is given
(the terminal, or Console(width=..., height=...)): panels get row budgets so the frame fits the
screen, columns are dropped as the screen narrows (sparkline, p99.9, client), and the middle
strip folds into one panel below 100 columns. Nothing here reads the clock or the tracer:
the same snapshot always renders the same frame.

It reads those typed views and nothing else; numbers are formatted by tracer.units.
"""
from __future__ import annotations

import io
import math

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tracer.errors import TracerError
from tracer.options import STALL_MS
from tracer.schema import ScreenHeader, Snapshot
from tracer.stitch.model import PHASES
from tracer.units import fmt_bytes, fmt_count, fmt_ms, fmt_pct, fmt_rate, fmt_us
from tracer.views.common import (PHASE_SHORT, big_keys, by_count, longest_first, pattern_line, patterns_note,
                                 phase_values)

PHASE_STYLES = {"socket_queue": "dodger_blue1", "wait": "gold3", "exec": "green3", "reply_write": "orchid"}
SPARK_CHARS = "▁▂▃▄▅▆▇█"
BAR_CHAR = "█"
MIDDLE_LINES = 6          # the request path / AOF / connections / keys strip
MIDDLE_COMPACT_LINES = 5  # the same folded into one panel (narrow or short screens)
PATTERN_ROWS = 3          # cache patterns shown, each with its first advice when there is room
PATTERN_MIN_HEIGHT = 24   # smaller screens leave the patterns panel out
PATTERN_STYLES = {"stampede": "bold red", "race": "bold red", "avalanche": "bold yellow",
                  "penetration": "bold yellow", "hot-key": "bold cyan", "big-value": "bold cyan"}

BORDER = "grey42"
TITLE = "bold"
DIM = "grey58"
HEAD = "bold grey70"
SPARK = "cadet_blue"


def sparkline(values, width: int | None = None) -> str:
    """Histogram counts -> '▁▃█▅ ' (zero bins are blank, any non-zero bin shows at least ▁)."""
    values = [max(0, int(v or 0)) for v in (values or [])]
    if width is not None and len(values) > width:
        # merge neighbouring bins so the line fits
        step = len(values) / width
        merged = []
        for i in range(width):
            merged.append(sum(values[int(i * step):int((i + 1) * step)]))
        values = merged
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    out = []
    for v in values:
        if v <= 0:
            out.append(" ")
        else:
            out.append(SPARK_CHARS[min(7, max(0, math.ceil(v / top * 8) - 1))])
    return "".join(out)


def stretched_sparkline(values, room: int) -> str:
    """A sparkline that uses up to `room` cells: each bin drawn twice when there is room, or bins merged."""
    values = list(values or [])
    if not values:
        return ""
    if room < len(values):
        return sparkline(values, max(1, room))
    line = sparkline(values)
    k = max(1, min(2, room // len(values)))
    return "".join(ch * k for ch in line)


def split_cells(parts: list[float], width: int) -> list[int]:
    """Largest-remainder split of `width` cells over non-negative parts; a non-zero part whose
    share is at least half a cell always gets one."""
    total = sum(p for p in parts if p and p > 0)
    if width <= 0 or total <= 0:
        return [0] * len(parts)
    exact = [(max(0.0, p or 0.0) / total) * width for p in parts]
    cells = [int(x) for x in exact]
    rest = width - sum(cells)
    order = sorted(range(len(parts)), key=lambda i: exact[i] - cells[i], reverse=True)
    for i in order[:rest]:
        cells[i] += 1
    return cells


def phase_bar(phases: dict, width: int) -> Text:
    """Stacked bar of the four phases, each in its own colour."""
    values = list(phase_values(phases).values())
    cells = split_cells(values, width)
    bar = Text()
    for name, n in zip(PHASES, cells):
        if n:
            bar.append(BAR_CHAR * n, style=PHASE_STYLES[name])
    if not bar.plain:
        bar.append("·" * width, style=DIM)
    return bar


def latency_style(us, stall_ms: float) -> str:
    if us is None:
        return DIM
    if us >= stall_ms * 1000:
        return "bold red"
    if us >= 1000:
        return "yellow"
    return ""


def _clip(text: str, width: int) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


class Col:
    """A fixed-width column of a line grid; width 0 = takes the room left (at least `min`)."""

    __slots__ = ("name", "width", "align", "min")

    def __init__(self, name, width: int = 0, align: str = "left", min: int = 8):
        self.name = name
        self.width = width
        self.align = align
        self.min = min


def grid_lines(cols: list, rows: list, inner: int, header: bool = True, gap: int = 2) -> list:
    """Rows of cells (str or Text) laid out as Text lines in fixed columns: much cheaper than a
    rich Table, which matters at a few frames a second on a busy host."""
    fixed = sum(c.width for c in cols) + gap * (len(cols) - 1)
    flex = max(min(c.min for c in cols if not c.width) if any(not c.width for c in cols) else 0, inner - fixed)
    widths = [c.width or flex for c in cols]
    spacer = " " * gap
    out = []
    if header:
        rows = [[Text(c.name, style=HEAD) if isinstance(c.name, str) else c.name for c in cols]] + list(rows)
    for row in rows:
        line = Text(no_wrap=True, overflow="ellipsis")
        for i, (col, w) in enumerate(zip(cols, widths)):
            cell = row[i] if i < len(row) else ""
            if i:
                line.append(spacer)
            if not isinstance(cell, Text):
                cell = Text(str(cell))
            if cell.cell_len > w:
                cell = cell.copy()
                cell.truncate(w, overflow="ellipsis")
            pad = " " * (w - cell.cell_len)
            if col.align == "right":
                line.append(pad)
                line.append_text(cell)
            else:
                line.append_text(cell)
                if i < len(cols) - 1:
                    line.append(pad)
        line.rstrip()
        out.append(line)
    return out


# -- the dashboard ---------------------------------------------------------------------------------
class Dashboard:
    """Builds frames; keeps nothing but its options, so one instance serves a whole run."""

    def __init__(self, max_commands: int = 12, max_slowest: int = 8, max_stalls: int = 6):
        self.max_commands = max_commands
        self.max_slowest = max_slowest
        self.max_stalls = max_stalls

    def render(self, snapshot: Snapshot | None = None, header: ScreenHeader | None = None) -> RenderableType:
        return _Frame(self, snapshot or Snapshot(), header or ScreenHeader())

    # -- the frame, for a given size ----------------------------------------------------------------
    def compose(self, snap: Snapshot, header: ScreenHeader, width: int, height: int) -> RenderableType:
        stall_ms = float(header.stall_ms or STALL_MS)
        head = self._header(snap, header, width)
        compact_mid = width < 100 or height < 34
        with_mid = height >= 20  # below that: commands and stalls only
        mid = self._middle(snap, width, compact=compact_mid) if with_mid else None
        mid_lines = 0 if not with_mid else (MIDDLE_COMPACT_LINES if compact_mid else MIDDLE_LINES)
        nodes = self._nodes(snap, width) if snap.nodes and height >= 30 else None
        node_lines = len(snap.nodes) + 3 if nodes is not None else 0
        patterns = self._patterns(snap, width, advice=height >= 40) if height >= PATTERN_MIN_HEIGHT else None
        pattern_lines = patterns.height if patterns is not None else 0
        rest = max(0, height - head.row_count - mid_lines - node_lines - pattern_lines)
        cmd_rows, slow_rows, stall_lines = self._budget(snap, rest)
        parts = [head] + ([nodes] if nodes is not None else []) + [self._commands(snap, width, cmd_rows, stall_ms)]
        if mid is not None:
            parts.append(mid)
        if patterns is not None:
            parts.append(patterns)
        parts.append(self._stalls(snap, width, stall_lines, stall_ms))
        if slow_rows > 0:
            parts.append(self._slowest(snap, width, slow_rows, stall_ms))
        return Group(*parts)

    def _budget(self, snap: Snapshot, rest: int) -> tuple[int, int, int]:
        """Rows for the commands table, the slowest table and lines for stalls, from the lines left.
        Each of the three panels costs 3 lines of frame (borders + column header)."""
        avail = rest - 9
        if avail < 6:  # very short screen: commands and stalls only
            avail = rest - 6
            cmd = max(1, avail // 2)
            return cmd, 0, max(1, avail - cmd)
        n_cmd = len(snap.commands)
        n_slow = len(snap.slowest)
        n_stall = len(snap.stalls)
        cmd, slow, stall = 3, 2, 2
        avail -= cmd + slow + stall
        caps = (self.max_commands, self.max_slowest, self.max_stalls * 2)
        wants = (max(n_cmd, 6), max(n_slow, 4), max(n_stall * 2, 4))
        grew = True
        while avail > 0 and grew:
            grew = False
            for which in (0, 2, 1, 0):
                if avail <= 0:
                    break
                cur = (cmd, slow, stall)[which]
                if cur < min(caps[which], wants[which]):
                    if which == 0:
                        cmd += 1
                    elif which == 1:
                        slow += 1
                    else:
                        stall += 1
                    avail -= 1
                    grew = True
        # what is left: half to the slowest list, the rest to stalls (they appear over time)
        if avail > 0:
            more = min(avail // 2, max(0, caps[1] - slow))
            slow += more
            avail -= more
            stall += min(avail, max(0, caps[2] - stall))
        return cmd, slow, stall

    # -- several instances: one row per node ----------------------------------------------------------
    def _nodes(self, snap: Snapshot, width: int) -> RenderableType:
        cols = [Col("node", 22), Col("requests", 10, "right"), Col("req/s", 9, "right"), Col("p99", 9, "right"),
                Col("main busy", 9, "right"), Col("stalls", 6, "right")]
        rows = []
        for n in snap.nodes:
            rows.append([Text(f":{n.port} pid {n.pid}", style="bold"), fmt_count(n.requests),
                         fmt_rate(n.rps), fmt_us(n.p99_us), fmt_pct(n.busy_ratio),
                         Text(str(n.stalls), style="bold red" if n.stalls else DIM)])
        return Panel(Group(*grid_lines(cols, rows, width - 4)), title=Text("nodes", style=TITLE), title_align="left",
                     border_style=BORDER, box=box.ROUNDED, height=len(rows) + 3, padding=(0, 1))

    # -- header -------------------------------------------------------------------------------------
    def _header(self, snap: Snapshot, h: ScreenHeader, width: int) -> RenderableType:
        left = Text()
        left.append(" redis-tracer", style="bold")
        left.append(f" {h.title}", style="bold cyan")
        prefix = len(" redis-tracer")
        facts = []
        if h.pid:
            facts.append(("pid ", str(h.pid) + (f" :{h.port}" if h.port else "")))
        elif h.port:
            facts.append(("port ", str(h.port)))
        if h.redis_version:
            facts.append(("redis ", str(h.redis_version)))
        if h.io_threads not in (None, ""):
            facts.append(("io-threads ", str(h.io_threads)))
        if h.aof:
            facts.append(("aof ", h.aof))
        if h.probe_mode:
            facts.append(("", h.probe_mode))
        for i, (k, v) in enumerate(facts):
            left.append("  │ " if not i else " · ", style=DIM)
            if k:
                left.append(k, style=DIM)
            left.append(v)
        lost = h.lost_events
        right = Text()
        right.append(f"{float(h.elapsed_s or 0):.1f}s", style="bold")
        right.append("  ")
        right.append(fmt_rate(h.rps or 0), style="bold")
        right.append(" req/s", style=DIM)
        right.append("  ")
        if lost:
            right.append(f"lost events {fmt_count(lost)}", style="bold white on red")
        else:
            right.append("lost events 0", style=DIM)
        right.append(" ")
        grid = Table.grid(expand=True, padding=0)
        if width < len(left) + len(right) + 2 <= width + prefix:
            left = left[prefix:]  # drop the program name before wrapping onto two lines
        if width >= len(left) + len(right) + 2:
            grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
            grid.add_column(justify="right", no_wrap=True)
            grid.add_row(left, right)
        else:
            grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
            grid.add_row(left)
            grid.add_row(Text(" ").append_text(right))
        return grid

    def header_lines(self, snap: Snapshot, h: ScreenHeader, width: int) -> int:
        grid = self._header(snap, h, width)
        return grid.row_count

    # -- commands -----------------------------------------------------------------------------------
    def _commands(self, snap: Snapshot, width: int, rows: int, stall_ms: float) -> RenderableType:
        items = by_count(snap.commands)
        # the last row says how many more there are, when there is room for a real row above it
        shown = items[:rows] if len(items) <= rows or rows < 3 else items[:rows - 1]
        inner = width - 4
        with_spark = inner >= 90
        with_p999 = inner >= 72
        name_w = min(22, max([len("command")] + [len(n) for n, _ in shown] + [0 if items else 12]))
        with_rate = inner >= 66
        cols = [Col("command", name_w), Col("count", 9, "right")]
        if with_rate:
            cols.append(Col("req/s", 7, "right"))
        cols += [Col("p50", 7, "right"), Col("p99", 7, "right")]
        if with_p999:
            cols.append(Col("p99.9", 7, "right"))
        cols += [Col("max", 7, "right"), Col("exec", 4, "right")]
        spark_room = inner - sum(c.width for c in cols) - 2 * len(cols)
        if with_spark:
            cols.append(Col(" latency histogram", 0, min=10))
        lines = []
        for name, c in shown:
            row = [Text(name, style="bold"), fmt_count(c.count)]
            if with_rate:
                row.append(fmt_rate(c.rps))
            row += [Text(fmt_us(c.p50_us), style=latency_style(c.p50_us, stall_ms)),
                    Text(fmt_us(c.p99_us), style=latency_style(c.p99_us, stall_ms))]
            if with_p999:
                row.append(Text(fmt_us(c.p999_us), style=latency_style(c.p999_us, stall_ms)))
            row.append(Text(fmt_us(c.max_us), style=latency_style(c.max_us, stall_ms)))
            row.append(fmt_pct(c.exec_share))
            if with_spark:
                row.append(Text(" " + stretched_sparkline(c.spark, spark_room - 1), style=SPARK))
            lines.append(row)
        if len(shown) < len(items) and rows >= 3:
            rest = items[len(shown):]
            n = sum(c.count for _, c in rest)
            lines.append([Text(f"+{len(rest)} more", style=DIM), Text(fmt_count(n), style=DIM)])
        if not items:
            lines.append([Text("waiting…", style=DIM)])
        title = Text("commands", style=TITLE)
        if snap.requests:
            title.append(f"  {fmt_count(snap.requests)} requests", style=DIM)
        return Panel(Group(*grid_lines(cols, lines, inner)), title=title, title_align="left", border_style=BORDER,
                     box=box.ROUNDED, height=rows + 3, padding=(0, 1))

    # -- middle strip: request path, AOF, connections, keys -----------------------------------------
    def _path_parts(self, snap: Snapshot) -> tuple[dict, float]:
        values = phase_values(snap.phases_us_total)
        return values, sum(values.values())

    def _legend(self, values: dict, total: float, names) -> Text:
        legend = Text(no_wrap=True, overflow="ellipsis")
        for i, p in enumerate(names):
            if i:
                legend.append("   ")
            legend.append("■ ", style=PHASE_STYLES[p])
            legend.append(PHASE_SHORT[p] + " ", style=DIM)
            legend.append(fmt_pct(values[p] / total) if total else "-", style="bold")
        return legend

    def _busy_line(self, snap: Snapshot, bar_w: int) -> Text:
        # the last refresh interval when known (live), else the whole trace
        busy = snap.busy_ratio_recent if snap.busy_ratio_recent is not None else snap.busy_ratio
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("main thread busy ", style=DIM)
        if busy is None:
            line.append("-")
            return line
        filled = min(bar_w, int(round(busy * bar_w)))
        style = "red" if busy >= 0.8 else ("yellow" if busy >= 0.5 else "green3")
        line.append(BAR_CHAR * filled, style=style)
        line.append("░" * (bar_w - filled), style="grey30")
        line.append(f" {busy * 100:.0f}%", style="bold " + style)
        return line

    def _fsync_lines(self, snap: Snapshot) -> list[Text]:
        f = snap.fsync
        count = f.count
        writes = f.aof_writes or 0
        main = f.main_thread
        if not count and not writes:
            return [Text("no AOF writes", style=DIM), Text("or fsyncs seen", style=DIM)]
        l1 = Text()
        l1.append("fsyncs ", style=DIM)
        l1.append(fmt_count(count), style="bold")
        l1.append("  main ", style=DIM)
        l1.append(fmt_count(main), style="bold red" if main else "")
        l2 = Text()
        l2.append("p99 ", style=DIM)
        l2.append(fmt_us(f.p99_us))
        l2.append("  max ", style=DIM)
        l2.append(fmt_us(f.max_us), style="yellow" if (f.max_us or 0) >= 10_000 else "")
        l3 = Text()
        l3.append("writes ", style=DIM)
        l3.append(fmt_count(writes))
        l4 = Text()
        l4.append("write max ", style=DIM)
        l4.append(fmt_us(f.aof_write_max_us))
        return [l1, l2, l3, l4]

    def _conn_lines(self, snap: Snapshot) -> list[Text]:
        c = snap.connections
        l1 = Text()
        l1.append("open ", style=DIM)
        l1.append(fmt_count(c.open or 0), style="bold")
        l1.append("  closed ", style=DIM)
        l1.append(fmt_count(c.closed))
        l2 = Text()
        l2.append("accepted ", style=DIM)
        l2.append(fmt_count(c.accepted))
        l3 = Text()
        l3.append("accept rate ", style=DIM)
        l3.append(fmt_rate(c.accept_rate or 0))
        l3.append("/s", style=DIM)
        l4 = Text()
        l4.append("queue p99 ", style=DIM)
        l4.append(fmt_us(c.accept_queue_p99_us if c.accepted else None))
        return [l1, l2, l3, l4]

    def _key_lines(self, snap: Snapshot, width: int) -> list[Text]:
        def key_line(kind: str, key, num: str) -> Text:
            t = Text()
            t.append(f"{kind} ", style=DIM)
            t.append(_clip(key, max(6, width - 5 - len(num))))
            t.append(f" {num}", style="bold")
            return t

        lines = [key_line("hot", key, fmt_count(n)) for key, n in snap.hot_keys[:2]]
        lines += [key_line("big", key, fmt_bytes(n)) for key, n in big_keys(snap.big_keys)[:4 - len(lines)]]
        if not lines:
            lines.append(Text("no hot or big keys yet", style=DIM))
        return lines

    def _middle(self, snap: Snapshot, width: int, compact: bool) -> RenderableType:
        def panel(title, lines, height):
            for t in lines:
                t.no_wrap = True
                t.overflow = "ellipsis"
            return Panel(Group(*lines), title=Text(title, style=TITLE), title_align="left", border_style=BORDER,
                         box=box.ROUNDED, height=height, padding=(0, 1))

        values, total = self._path_parts(snap)
        if compact:
            inner = width - 4
            bar = phase_bar(values, inner)
            f = snap.fsync
            c = snap.connections
            line = self._busy_line(snap, 10)
            line.append("  │ ", style=DIM)
            line.append("fsync ", style=DIM)
            line.append(f"{fmt_count(f.count)} p99 {fmt_us(f.p99_us)}")
            if f.main_thread:
                line.append(f" main {fmt_count(f.main_thread)}", style="bold red")
            line.append("  │ ", style=DIM)
            line.append("conns ", style=DIM)
            line.append(f"{fmt_count(c.open or 0)} open {fmt_rate(c.accept_rate or 0)}/s "
                        f"q99 {fmt_us(c.accept_queue_p99_us if c.accepted else None)}")
            return panel("request path · AOF · connections",
                         [bar, self._legend(values, total, PHASES), line], MIDDLE_COMPACT_LINES)

        with_keys = width >= 120
        ratios = (4, 3, 3, 4) if with_keys else (4, 3, 3)
        path_inner = int(width * ratios[0] / sum(ratios)) - 4
        path = [phase_bar(values, path_inner),
                self._legend(values, total, PHASES[:2]),
                self._legend(values, total, PHASES[2:]),
                self._busy_line(snap, max(4, min(16, path_inner - 23)))]
        grid = Table.grid(expand=True, padding=0)
        for r in ratios:
            grid.add_column(ratio=r)
        cells = [panel("request path", path, MIDDLE_LINES),
                 panel("AOF / fsync", self._fsync_lines(snap), MIDDLE_LINES),
                 panel("connections", self._conn_lines(snap), MIDDLE_LINES)]
        if with_keys:
            key_inner = int(width * ratios[3] / sum(ratios)) - 4
            cells.append(panel("keys", self._key_lines(snap, key_inner), MIDDLE_LINES))
        grid.add_row(*cells)
        return grid

    # -- cache patterns ------------------------------------------------------------------------------
    def _patterns(self, snap: Snapshot, width: int, advice: bool) -> Panel:
        """Stampedes, races, ...: one line each (kind and evidence), its first advice under it on tall screens."""
        shown = snap.patterns[:PATTERN_ROWS]
        lines = []
        for p in shown:
            line = Text()
            line.append(f"{p.kind:<11} ", style=PATTERN_STYLES.get(p.kind, "bold"))
            line.append(pattern_line(p).split(": ", 1)[-1])
            lines.append(line)
            if advice and p.advice:
                lines.append(Text(" " * 12 + "↳ " + p.advice[0], style="grey62 italic"))
        if len(snap.patterns) > len(shown):
            lines.append(Text(" " * 12 + f"+{len(snap.patterns) - len(shown)} more", style=DIM))
        if not lines:
            lines.append(Text("no stampede, penetration, avalanche, race, hot key or big value seen yet", style=DIM))
        for t in lines:
            t.no_wrap = True
            t.overflow = "ellipsis"
        height = len(lines) + 2
        note = patterns_note(snap.patterns_input)
        if note:     # wrapped, not cut: it says what to do
            lines.append(Text(note, style=DIM))
            height += math.ceil(len(note) / max(1, width - 4))
        title = Text("cache patterns", style=TITLE)
        if snap.patterns:
            title.append(f" {len(snap.patterns)}", style="bold red")
        return Panel(Group(*lines), title=title, title_align="left", border_style=BORDER, box=box.ROUNDED,
                     height=height, padding=(0, 1))

    # -- stalls -------------------------------------------------------------------------------------
    def _stalls(self, snap: Snapshot, width: int, lines: int, stall_ms: float) -> RenderableType:
        stalls = longest_first(snap.stalls)
        inner = width - 4
        # one line per stall, then advice lines for the longest ones while lines remain
        n = len(stalls) if len(stalls) <= lines else max(0, lines - 1)
        advised = max(0, min(n, lines - n - (1 if n < len(stalls) else 0)))
        with_client = inner >= 100
        with_when = inner >= 84
        cols = [Col("duration", 8, "right"), Col("culprit", 0, min=10), Col("victims", 7, "right"),
                Col("added", 8, "right"), Col("class", 11)]
        if with_client:
            cols.append(Col("client", 21))
        if with_when:
            cols.append(Col("at", 7, "right"))
        rows = []
        for i, s in enumerate(stalls[:n]):
            shown_dur = ("…" if s.open else "") + fmt_ms(s.duration_ms)  # … still collecting victims
            row = [Text(shown_dur, style="bold red" if s.duration_ms >= stall_ms * 4 else "bold yellow"),
                   Text(s.culprit, style="bold"), fmt_count(s.victims), "+" + fmt_ms(s.victim_added_ms),
                   Text(s.class_ or "-", style="cyan")]
            if with_client:
                row.append(Text(s.client or "-", style=DIM))
            if with_when:
                row.append(Text(f"+{float(s.start_s):.1f}s", style=DIM))
            rows.append(row)
        out = grid_lines(cols, rows, inner)
        # advice lines go under their stall (after the header line, one stall line each)
        for i in reversed(range(min(advised, n))):
            frames = stalls[i].frames
            on_cpu = f"on CPU: {frames[0].describe()} · " if frames else ""
            advice = Text(" " * 10 + "↳ " + on_cpu + (stalls[i].first_advice or "no advice"), style="grey62 italic",
                          no_wrap=True, overflow="ellipsis")
            out.insert(i + 2, advice)
        if n < len(stalls):
            out.append(Text(" " * 10 + f"+{len(stalls) - n} more", style=DIM))
        if not stalls:
            out.append(Text(" " * 10 + f"no stall ≥ {stall_ms:g} ms yet", style=DIM))
        title = Text("stalls", style=TITLE)
        if stalls:
            title.append(f" {len(stalls)}", style="bold red")
        title.append(f"  main thread busy ≥ {stall_ms:g} ms, longest first", style=DIM)
        return Panel(Group(*out), title=title, title_align="left", border_style=BORDER, box=box.ROUNDED,
                     height=lines + 3, padding=(0, 1))

    # -- slowest requests ---------------------------------------------------------------------------
    def _slowest(self, snap: Snapshot, width: int, rows_budget: int, stall_ms: float) -> RenderableType:
        reqs = group_batches(sorted(snap.slowest, key=lambda r: -r.latency_us))
        reqs = reqs[:rows_budget]
        inner = width - 4
        bar_w = 32 if inner >= 110 else (20 if inner >= 90 else 12)
        with_client = inner >= 90
        with_where = inner >= 100
        legend = Text()
        for p in PHASES:
            legend.append("■", style=PHASE_STYLES[p])
        legend.append(" where the time went" if bar_w >= 24 else " phases", style=HEAD)
        cmd_w = min(14, max([len("command")] + [len(r.command or "?") for r, _ in reqs]))
        cols = [Col("total", 7, "right"), Col(legend, bar_w)]
        if with_where:
            cols.append(Col("mostly", 10))
        cols += [Col("command", cmd_w), Col("key", 0, min=8)]
        if with_client:
            cols.append(Col("client", 21))
        rows = []
        for r, more in reqs:
            lat = r.latency_us
            phases = phase_values(r.phases)
            row = [Text(fmt_us(lat), style=latency_style(lat, stall_ms) or "bold"), phase_bar(phases, bar_w)]
            if with_where:
                row.append(dominant_phase(phases))
            key = Text(str(r.key if r.key is not None else ""))
            if more:
                key.append(f"  +{more} alike", style=DIM)
            row += [Text(r.command or "?", style="bold"), key]
            if with_client:
                row.append(Text(r.client or "-", style=DIM))
            rows.append(row)
        if not reqs:
            rows.append(["", Text("none yet", style=DIM)])
        return Panel(Group(*grid_lines(cols, rows, inner)), title=Text("slowest requests", style=TITLE),
                     title_align="left", border_style=BORDER, box=box.ROUNDED, height=rows_budget + 3,
                     padding=(0, 1))


def group_batches(reqs: list) -> list:
    """Fold requests of one client with the same latency (a pipelined batch held up together)
    into the first of them: [(SlowRequest, how many were folded into it)], so the list shows variety."""
    out: list = []
    index: dict = {}
    for r in reqs:
        key = (r.client, round(math.log(max(1.0, float(r.latency_us or 0))) / math.log(1.01)))  # ~1 % buckets
        at = index.get(key)
        if at is not None and r.client:
            out[at][1] += 1
            continue
        index[key] = len(out)
        out.append([r, 0])
    return [tuple(item) for item in out]


def dominant_phase(phases: dict) -> Text:
    values = phase_values(phases)
    total = sum(values.values())
    if total <= 0:
        return Text("-", style=DIM)
    name = max(PHASES, key=lambda p: values[p])
    t = Text()
    t.append(PHASE_SHORT[name], style=PHASE_STYLES[name])
    t.append(f" {values[name] / total * 100:.0f}%", style=DIM)
    return t


class _Frame:
    """Lays the dashboard out when rich renders it, for the space it is given."""

    def __init__(self, dash: Dashboard, snapshot: Snapshot, header: ScreenHeader):
        self.dash = dash
        self.snapshot = snapshot
        self.header = header

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        height = options.height or console.height
        yield self.dash.compose(self.snapshot, self.header, width, height)


_DEFAULT = Dashboard()


def render(snapshot: Snapshot | None = None, header: ScreenHeader | None = None) -> RenderableType:
    return _DEFAULT.render(snapshot, header)


def save_svg(path: str, snapshot: Snapshot, header: ScreenHeader, width: int = 120, height: int = 40,
             title: str = "redis-tracer live") -> None:
    """One frame as an SVG image (the README's screenshot; `live --svg`)."""
    console = Console(record=True, width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", legacy_windows=False)
    console.print(Dashboard().render(snapshot, header))
    try:
        console.save_svg(path, title=title)
    except OSError as err:
        raise TracerError(f"cannot write {path}: {err.strerror}") from None
