"""Optional compiled fast paths (docs/PERFORMANCE.md) and the man page. Everything else is in pyproject.toml.

optional=True: without a C compiler or Python headers the build prints a warning, the package
still installs, and the pure-Python reference path runs (`redis-tracer doctor` says which).
The man page, redis-tracer(1), is made from the parser (tracer/manpage.py, argparse-manpage: a build
requirement) and installed as share/man/man1/redis-tracer.1; without argparse-manpage the build
warns and installs no man page.
"""
import os
import sys

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
MAN_PAGE = os.path.join("build", "man", "redis-tracer.1")   # relative to this file, as data_files must be

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
# each compiled module sits in the stage whose Python it replaces (tests/test_import_graph.py)
MODULES = {
    "tracer.kernel._events_native": "tracer/kernel/_events_native.c",   # events.decode
    "tracer.decode._resp_native": "tracer/decode/_resp_native.c",       # RESP fast paths
    "tracer.stitch._stitch_native": "tracer/stitch/_stitch_native.c",   # Stitcher.feed_raw
}



def man_page() -> list:
    """data_files for the man page, written now from the parser of the tree being built."""
    sys.path.insert(0, HERE)
    try:
        from tracer.manpage import render
        text = render()
    except Exception as err:    # argparse-manpage missing, or the parser failing: no man page, a warning
        print(f"warning: redis-tracer(1) not built: {err}", file=sys.stderr)
        return []
    finally:
        sys.path.remove(HERE)
    os.makedirs(os.path.join(HERE, os.path.dirname(MAN_PAGE)), exist_ok=True)
    with open(os.path.join(HERE, MAN_PAGE), "w", encoding="utf-8") as f:
        f.write(text)
    return [("share/man/man1", [MAN_PAGE])]


setup(ext_modules=[Extension(name, [source], optional=True, extra_compile_args=FLAGS)
                   for name, source in MODULES.items()],
      data_files=man_page())
