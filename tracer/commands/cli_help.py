"""What the commands share on their command lines: the epilog every --help ends with (examples and
exit status, as bcc's tools print them), the --since/--until window and the --fail-on-* gates."""
from __future__ import annotations

import argparse
import sys

from tracer.errors import EXIT_CODES, EXIT_GATE, EXIT_OK


def exit_status_text() -> str:
    return "exit status:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)


HELP_WIDTH = 80


def fit_example(line: str) -> list[str]:
    """`  command   # what it does`, or the comment on a line of its own above the command when the
    two do not fit HELP_WIDTH columns together."""
    command, sep, comment = line.partition("  # ")
    if len(line) <= HELP_WIDTH or not sep:
        return [line]
    indent = " " * (len(command) - len(command.lstrip()))
    return [f"{indent}# {comment.strip()}", command.rstrip()]


def epilog(examples: str | None) -> str:
    """`examples:` (the command's EXAMPLES) and `exit status:` below a command's options."""
    lines = [out for line in (examples or "").rstrip().splitlines() for out in fit_example(line)]
    parts = ["examples:\n" + "\n".join(lines)] if lines else []
    return "\n\n".join(parts + [exit_status_text()])


def decorate(parser: argparse.ArgumentParser, examples: str | None) -> None:
    """A command's parser keeps its own line breaks in the description and epilog."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = epilog(examples)


def add_window_args(parser) -> None:
    parser.add_argument("--since", metavar="WHEN",
                        help="analyse from WHEN: seconds from the start of the recording (2.5), or a time "
                             "(2026-12-02T05:44:03, 05:44:03 today, epoch seconds)")
    parser.add_argument("--until", metavar="WHEN", help="analyse up to WHEN (as --since)")


def add_fail_on_lost(parser) -> None:
    parser.add_argument("--fail-on-lost", action="store_true",
                        help=f"exit {EXIT_GATE} when any event was lost (the output is printed in full first)")


def lost_gate(args, lost_events: int) -> int:
    """EXIT_GATE (with one line on stderr) when --fail-on-lost was given and events were lost."""
    if getattr(args, "fail_on_lost", False) and lost_events:
        print(f"redis-tracer: {lost_events} events were lost (--fail-on-lost)", file=sys.stderr)
        return EXIT_GATE
    return EXIT_OK
