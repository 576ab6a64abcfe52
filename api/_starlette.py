"""The one place the app uses Starlette's private API (pinned by tests/test_shape.py).

Keep every use of a Starlette internal here, so an upgrade breaks one file.
"""

from __future__ import annotations

from starlette._exception_handler import wrap_app_handling_exceptions

__all__ = ["wrap_app_handling_exceptions"]
