"""Which implementation of the per-record hot path runs: the compiled fast paths (C extensions
built at install time, docs/PERFORMANCE.md) or the pure-Python reference.

The pure-Python code is always there and always correct; a compiled module only takes over the
common case where its output is identical (tests/test_native.py). REDIS_TRACER_PURE_PYTHON=1 forces
the reference path (identity tests, or to rule the compiled path out when something looks wrong).
"""
from __future__ import annotations

import importlib
import os

PURE_ENV = "REDIS_TRACER_PURE_PYTHON"
# every compiled module, by the stage whose Python it replaces (named, not imported, here: this base
# module must not import upper stages)
MODULES = ("tracer.kernel._events_native", "tracer.decode._resp_native", "tracer.stitch._stitch_native",
           "tracer.analyze._analysis_native")


def forced_pure() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def load(name: str):
    """The compiled module `name`, or None (not built, or the reference path is forced)."""
    if forced_pure():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def status() -> tuple[bool, str]:
    """(compiled path active, one line saying which path runs and why)."""
    if forced_pure():
        return False, f"pure-Python reference path ({PURE_ENV} is set)"
    missing = [name for name in MODULES if load(name) is None]
    if missing:
        return False, "pure-Python reference path: compiled modules not built (" + ", ".join(missing) + ")"
    return True, "compiled fast path (" + ", ".join(MODULES) + ")"
