"""Which implementation of the per-record hot path runs: the compiled fast paths (C extensions
built at install time, docs/PERFORMANCE.md) or the pure-Python reference.

The pure-Python code is always there and always correct; a compiled module only takes over the
common case where its output is identical (tests/test_native.py). REDIS_TRACER_PURE_PYTHON=1 forces
the reference path (identity tests, or to rule the compiled path out when something looks wrong).
A compiled module that is missing, or that does not match the Python beside it (built from other
sources: its configure() call fails), leaves that stage on the reference path.
"""
from __future__ import annotations

import importlib
import os

PURE_ENV = "REDIS_TRACER_PURE_PYTHON"
# every compiled module -> the module whose Python it speeds up (in the same stage). Named, not
# imported, here: this base module must not import upper stages.
MODULES = {
    "tracer.kernel._events_native": "tracer.kernel.events",
    "tracer.decode._resp_native": "tracer.decode.resp",
    "tracer.stitch._stitch_native": "tracer.stitch.stitcher",
}
_mismatched: dict[str, str] = {}   # compiled module -> why configure() refused it


def forced_pure() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def load(name: str, configure=None):
    """The compiled module `name` after configure(module), or None: not built, the reference path
    forced, or configure() failed (a stale build)."""
    if forced_pure():
        return None
    try:
        mod = importlib.import_module(name)
    except ImportError:
        return None
    if configure is not None:
        try:
            configure(mod)
        except (TypeError, ValueError, AttributeError, KeyError, RuntimeError) as e:
            _mismatched[name] = f"{type(e).__name__}: {e}"
            return None
    return mod


def status() -> tuple[bool, str]:
    """(compiled path active, one line saying which path runs and why)."""
    if forced_pure():
        return False, f"pure-Python reference path ({PURE_ENV} is set)"
    for owner in MODULES.values():
        importlib.import_module(owner)      # each configures its compiled module when imported
    missing = [name for name in MODULES if name not in _mismatched and load(name) is None]
    if _mismatched:
        return False, ("pure-Python reference path for " + ", ".join(sorted(_mismatched)) +
                       ": built from other sources (" + "; ".join(sorted(set(_mismatched.values()))) + ")")
    if missing:
        return False, "pure-Python reference path: compiled modules not built (" + ", ".join(missing) + ")"
    return True, "compiled fast path (" + ", ".join(MODULES) + ")"
