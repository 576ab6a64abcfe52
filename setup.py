"""Builds the optional C fast path ``kvconf._speedups``; metadata lives in pyproject.toml.

``optional=True``: without a C compiler the build warns and kvconf falls back
to the pure-Python ``kvconf._reader`` (same behaviour, slower cached reads).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("kvconf._speedups", ["kvconf/_speedups.c"], optional=True)])
