"""`redis-tracer completion bash|zsh`: a shell completion script made from the parser (shtab)."""
from __future__ import annotations

from tracer.errors import TracerError

SHELLS = ("bash", "zsh")
EXAMPLES = """\
  redis-tracer completion bash > /etc/bash_completion.d/redis-tracer
  redis-tracer completion zsh > "${fpath[1]}/_redis-tracer"
  eval "$(redis-tracer completion bash)"        # this shell only"""


def add_parser(sub):
    p = sub.add_parser("completion", help="print a bash or zsh completion script",
                       description="Print a tab-completion script for redis-tracer's commands and options.")
    p.add_argument("shell", choices=SHELLS)
    return p


def run(args) -> int:
    try:
        import shtab
    except ImportError:
        raise TracerError("shtab is not installed", "pip install shtab (scripts/bootstrap installs it)") from None
    print(shtab.complete(args.root_parser, shell=args.shell))
    return 0
