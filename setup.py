"""Optional compiled fast paths (docs/PERFORMANCE.md). Everything else is in pyproject.toml.

optional=True: without a C compiler or Python headers the build prints a warning, the package
still installs, and the pure-Python reference path runs (`redis-tracer doctor` says which).
"""
from setuptools import Extension, setup

setup(ext_modules=[
    Extension("tracer.decode._resp_native", ["tracer/decode/_resp_native.c"], optional=True,
              extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]),
])
