"""The man page, redis-tracer(1), made from the command-line parser (argparse-manpage), so it says
what --help says: every command with its options, examples and exit status.

setup.py writes it at build/install time and installs it as share/man/man1/redis-tracer.1 (in a
venv: .venv/share/man/man1, which `man redis-tracer` finds when .venv/bin is on PATH);
`python -m tracer.manpage [-o FILE]` writes it anywhere.
"""
from __future__ import annotations

import argparse
import sys

from tracer import __version__
from tracer.cli import build_parser

NAME = "redis-tracer"


def render() -> str:
    from argparse_manpage.manpage import Manpage

    parser = build_parser()
    page = Manpage(parser, _data={"manual_title": "redis-tracer manual", "project_name": f"{NAME} {__version__}",
                                  "description": parser.description})
    return str(page) + _examples_section(parser)


def _roff(line: str) -> str:
    line = line.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + line if line.startswith((".", "'")) else line


def _examples_section(parser) -> str:
    """Each command's `examples:` epilog (argparse-manpage leaves subcommand epilogs out)."""
    out = [".SH EXAMPLES"]
    for name, sub in parser.command_parsers.items():
        examples = (sub.epilog or "").split("\n\nexit status:")[0]
        if not examples.startswith("examples:"):
            continue
        out += [f".SS {_roff(f'{NAME} {name}')}", ".nf"]
        out += [_roff(line.strip()) for line in examples.splitlines()[1:]]
        out.append(".fi")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    cli = argparse.ArgumentParser(prog="python -m tracer.manpage", description="write redis-tracer(1)")
    cli.add_argument("-o", "--output", help="file to write (default: stdout)")
    args = cli.parse_args(argv)
    text = render()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
