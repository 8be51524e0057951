"""Optional compiled fast paths (docs/PERFORMANCE.md). Everything else is in pyproject.toml.

optional=True: without a C compiler or Python headers the build prints a warning, the package
still installs, and the pure-Python reference path runs (`redis-tracer doctor` says which).
"""
from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
# each compiled module sits in the stage whose Python it replaces (tests/test_import_graph.py)
MODULES = {
    "tracer.kernel._events_native": "tracer/kernel/_events_native.c",   # events.decode
    "tracer.decode._resp_native": "tracer/decode/_resp_native.c",       # RESP fast paths
    "tracer.stitch._stitch_native": "tracer/stitch/_stitch_native.c",   # Stitcher.feed_raw
}

setup(ext_modules=[Extension(name, [source], optional=True, extra_compile_args=FLAGS)
                   for name, source in MODULES.items()])
