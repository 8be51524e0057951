"""Command-line entry point: dispatches to tracer.commands.<name>."""
from __future__ import annotations

import argparse
import importlib
import sys

from tracer import __version__
from tracer.commands import cli_help
from tracer.errors import EXIT_USAGE, TracerError

# Order is the order `--help` lists them. A module that is not there yet is simply not offered.
COMMANDS = ["demo", "live", "trace", "diagnose", "record", "replay", "report", "export", "count", "doctor",
            "agent", "completion"]

EXAMPLES = """\
  redis-tracer doctor                  # can this machine trace?
  redis-tracer live --port 6379        # the live dashboard
  redis-tracer trace --min-ms 10 --command GET,SET   # slow GETs and SETs
  redis-tracer diagnose --duration 30  # trace 30 s, then explain the stalls
  redis-tracer record -o run.rtrace --duration 60    # then:
  redis-tracer report run.rtrace --hist              # latency histograms
  redis-tracer COMMAND --help          # each command's options and examples"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; `parser.command_parsers` maps each command to its own parser."""
    parser = argparse.ArgumentParser(
        prog="redis-tracer",
        description="Trace every Redis request from the kernel: where its time went, who delayed it.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=cli_help.epilog(EXAMPLES),
    )
    parser.add_argument("--version", action="version", version=f"redis-tracer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.command_parsers = {}
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"tracer.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"tracer.commands.{name}":
                continue
            raise
        sub_parser = module.add_parser(sub)
        cli_help.decorate(sub_parser, getattr(module, "EXAMPLES", None))
        sub_parser.set_defaults(run=module.run)
        parser.command_parsers[name] = sub_parser
    parser.set_defaults(root_parser=parser)     # `completion` walks the whole parser
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse leaves a subcommand's unknown options to the top-level parser, which would print
        # the top-level usage: the subcommand's own usage is the one that helps (exits 2)
        owner = parser.command_parsers.get(getattr(args, "command", None), parser)
        owner.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        if getattr(args, "ebpf", False):        # bcc's tools' --ebpf: the program, not a run
            from tracer.options import TraceOptions
            from tracer.runtime import runner

            options = TraceOptions.from_args(args)
            return runner.print_program(options, runner.ebpf_targets(options) if "pid" in args else [])
        return int(args.run(args) or 0)
    except TracerError as err:
        print(f"redis-tracer: {err.line()}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `redis-tracer trace --json | head` closes the pipe: not an error worth a traceback.
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
