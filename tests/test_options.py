"""TraceOptions: built once from the command line, every default from tracer/options.py. Root-free."""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from tracer import options
from tracer.cli import build_parser
from tracer.errors import TracerError
from tracer.options import TraceOptions

REPO = Path(__file__).resolve().parent.parent


def parse(*argv) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", ["live", "diagnose", "record", "trace", "count"])
def test_every_tracing_command_gets_the_same_defaults(command):
    extra = ["-o", "x.rtrace"] if command == "record" else []
    got = TraceOptions.from_args(parse(command, *extra))
    # diagnose explains stalls by default (--why); on-CPU samples are on unless --no-why
    why = options.WHY_IN_DIAGNOSE if command == "diagnose" else options.WHY
    assert got == TraceOptions(record_path=got.record_path, why=why)
    assert got.oncpu == options.ONCPU
    off = TraceOptions.from_args(parse(command, *extra, "--no-why"))
    assert not off.why and not off.oncpu
    on = TraceOptions.from_args(parse(command, *extra, "--why"))
    assert on.why and on.oncpu
    assert (got.stall_ms, got.capture_bytes, got.poll_ms, got.ringbuf_pages) == \
        (options.STALL_MS, options.CAPTURE_BYTES, options.POLL_MS, options.RINGBUF_PAGES)


def test_command_line_values_reach_the_options():
    got = TraceOptions.from_args(parse("live", "--port", "7000,7001", "--pid", "5", "--stall-ms", "20",
                                       "--capture-bytes", "256", "--ringbuf-pages", "64", "--refresh", "4",
                                       "--exec-probes", "--show-values", "--record", "r.rtrace"))
    assert got.ports == (7000, 7001) and got.pids == (5,) and got.stall_ms == 20 and got.capture_bytes == 256
    assert got.ringbuf_pages == 64 and got.tick_s == 0.25 and got.exec_probes and got.show_values
    assert got.record_path == "r.rtrace"
    assert TraceOptions.from_args(parse("live", "--why")).why
    assert not TraceOptions.from_args(parse("diagnose", "--no-why")).why
    demo = TraceOptions.from_args(parse("demo"))
    assert demo.poll_ms == 50 and demo.duration == 30 and demo.pids == ()


@pytest.mark.parametrize("field, value, words", [
    ("stall_ms", 0, "--stall-ms must be positive"), ("capture_bytes", 100, "--capture-bytes 100 is not a power"),
    ("capture_bytes", 16384, "between 64 and 8192"),
    ("ringbuf_pages", 3, "--ringbuf-pages 3 is not a power"), ("refresh_hz", 50, "--refresh must be between"),
    ("duration", -1, "--duration must be positive"),
])
def test_bad_values_are_refused_in_one_line(field, value, words):
    with pytest.raises(TracerError) as err:
        TraceOptions(**{field: value})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_defaults_are_not_written_again_elsewhere():
    """The default values of options.py appear as literal defaults nowhere else in the package."""
    literals = {options.STALL_MS, options.CAPTURE_BYTES, options.RINGBUF_PAGES}
    offenders = []
    for path in list((REPO / "tracer").rglob("*.py")) + list((REPO / "dashboards").rglob("*.py")):
        if path.name == "options.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arguments):
                defaults = node.defaults + [d for d in node.kw_defaults if d is not None]
                offenders += [f"{path.relative_to(REPO)}:{d.lineno}" for d in defaults
                              if isinstance(d, ast.Constant) and type(d.value) in (int, float)
                              and d.value in literals and d.value not in (0, 1)]
    assert not offenders, offenders


def test_mode_default_is_defined_once_and_flags_choose_it():
    for command in ("live", "diagnose", "record", "trace", "count", "demo"):
        extra = ["-o", "x.rtrace"] if command == "record" else []
        assert TraceOptions.from_args(parse(command, *extra)).mode == options.MODE
        assert TraceOptions.from_args(parse(command, *extra, "--engine")).mode == "engine"
        assert TraceOptions.from_args(parse(command, *extra, "--full")).mode == "full"
    with pytest.raises(SystemExit):
        parse("live", "--full", "--engine")
    assert TraceOptions.from_args(parse("trace", "--engine", "--min-ms", "12.5")).slow_ms == 12.5


def test_show_values_requires_full_in_one_line():
    with pytest.raises(TracerError) as err:
        TraceOptions.from_args(parse("live", "--engine", "--show-values"))
    assert str(err.value) == "--show-values requires --full (the engine never captures values)"
    assert TraceOptions.from_args(parse("live", "--full", "--show-values")).show_values
    with pytest.raises(TracerError, match="--min-ms must be between"):
        TraceOptions(slow_ms=-1)


def test_show_values_without_a_mode_flag_selects_full_and_says_so_once(capsys):
    # an operator who asks to see values gets them: the default (engine) mode never captures them
    got = TraceOptions.from_args(parse("live", "--show-values"))
    assert got.mode == "full" and got.show_values
    assert capsys.readouterr().err == options.SHOW_VALUES_NOTE + "\n"
    assert TraceOptions.from_args(parse("trace")).mode == options.MODE
    assert capsys.readouterr().err == ""
