"""Help and discovery through the real CLI: `examples:` and `exit status:` epilogs on every command,
`completion bash|zsh` (shtab), the man page made from the parser and installed by bootstrap, and
`--ebpf`, which prints the BPF program with its compile flags and attaches nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tracer_proc import REPO

from tracer.cli import COMMANDS


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tracer", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, **kw)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_help_ends_with_examples_and_exit_status(command):
    proc = cli(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    examples = text.split("\nexamples:\n")[1].split("\n\n")[0].splitlines()
    assert examples and all(line.startswith(("  redis-tracer ", "  eval ", "  # ")) for line in examples)
    assert max(len(line) for line in text.splitlines()) <= 80, text     # a comment too long moves above
    if command:
        assert any(f"redis-tracer {command}" in line for line in examples), examples
    status = text.split("\nexit status:\n")[1].splitlines()
    assert [line.split()[0] for line in status] == ["0", "1", "2", "3", "77", "78", "130"]


def complete(words: list[str]) -> list[str]:
    """What bash completes for `words` (the last one being typed), with the script `completion bash` printed."""
    script = cli("completion", "bash").stdout
    line = " ".join(f'"{w}"' for w in words)
    probe = f"""{script}
COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE="{' '.join(words)}"; COMP_POINT=${{#COMP_LINE}}
_shtab_redis_tracer; printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    return proc.stdout.split()


def test_bash_completion_of_commands_and_options():
    assert complete(["redis-tracer", "tr"]) == ["trace"]
    assert "--key-prefix" in complete(["redis-tracer", "trace", "--key"])
    assert set(complete(["redis-tracer", "report", "--fail"])) == {"--fail-on-lost"}
    assert "--fail-on-stall" in complete(["redis-tracer", "diagnose", "--fail-on-s"])


def test_zsh_completion_and_bad_shell():
    zsh = cli("completion", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef redis-tracer")
    assert "--key-prefix" in zsh.stdout and "--since" in zsh.stdout
    assert cli("completion", "fish").returncode == 2


def test_man_page_from_the_parser_is_installed():
    page = subprocess.run([sys.executable, "-m", "tracer.manpage"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert page.startswith(".TH REDIS\\-TRACER \"1\"")
    for command in COMMANDS:
        assert f"'redis\\-tracer {command}'" in page, command      # its COMMAND and OPTIONS sections
    assert "\\-\\-key\\-prefix" in page and ".SH EXAMPLES" in page and "exit status:" in page
    installed = os.path.join(sys.prefix, "share", "man", "man1", "redis-tracer.1")
    assert os.path.exists(installed), "scripts/bootstrap writes the man page into the venv"
    if shutil.which("man"):
        env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
        found = subprocess.run(["man", "-w", "redis-tracer"], capture_output=True, text=True, env=env, timeout=30)
        assert found.stdout.strip() == installed
        shown = subprocess.run(["man", "-l", installed], capture_output=True, text=True, timeout=30,
                               env={**env, "MANWIDTH": "100"})
        assert "redis-tracer trace --command GET,SET" in shown.stdout


@pytest.mark.bpf
def test_ebpf_prints_the_program_with_its_flags_and_attaches_nothing(redis_server):
    proc = cli("trace", "--port", str(redis_server.port), "--engine", "--command", "GET", "--ebpf")
    assert proc.returncode == 0, proc.stderr
    assert "attached:" not in proc.stderr
    head, _, body = proc.stdout.partition(" */\n")
    flags = [line.strip()[2:].strip() for line in head.splitlines()[1:]]
    assert head.startswith("/* redis-tracer: probes engine, conn, fds, loop, fsync")      # + sample (on-CPU stacks)
    assert f"; redis-server pid {redis_server.pid}; compiled by bcc with:" in head
    assert f"-DTARGET_TGID_MATCH(t)=((t)=={redis_server.pid})" in flags and "-DENG_CMD_FILTER=1" in flags
    assert "TRACEPOINT_PROBE" in body and "ENG_CMD_FILTER" in body
    # it is the program: bcc compiles and loads it as printed
    full = cli("live", "--port", str(redis_server.port), "--ebpf")
    head, _, body = full.stdout.partition(" */\n")
    flags = [line.strip()[2:].strip() for line in head.splitlines()[1:]]
    assert "-DCAPTURE_MAX=4096" in flags and "-DENG_CMD_FILTER=1" not in " ".join(flags)
    from bcc import BPF
    bpf = BPF(text=body.encode(), cflags=flags)
    try:
        assert bpf.num_open_tracepoints() > 10
    finally:
        bpf.cleanup()
