"""Creating tenants from a template or as a clone of another tenant.

The logic lives in the library (:func:`kvconf.tenants.provision`) so the CLI
creates tenants the same way: all or nothing (everything that can be checked
without Redis is checked before the tenant is created; a half-made tenant is
deleted again). This module keeps the app's import path.
"""

from __future__ import annotations

from kvconf.tenants import provision

__all__ = ["provision"]
