"""Builds the optional C fast path ``kvconf._watch._speedups``; metadata lives in pyproject.toml.

``optional=True``: without a C compiler the build warns and kvconf falls back
to the pure-Python ``kvconf._watch.reader`` (same behaviour, slower cached reads).
"""

from setuptools import Extension, setup

SPEEDUPS = Extension("kvconf._watch._speedups", ["kvconf/_watch/_speedups.c"], optional=True)

setup(ext_modules=[SPEEDUPS])
