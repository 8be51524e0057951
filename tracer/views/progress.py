"""A progress bar on stderr for commands that read a whole trace file (report, export, replay --max):
shown only when stderr is a terminal, nothing at all otherwise (a pipe or a CI log stays clean)."""
from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def file_progress(description: str, stream=None):
    """Yields progress(done_bytes, total_bytes), or None when `stream` (stderr) is not a terminal."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=stream, highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)
        yield progress
