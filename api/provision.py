"""Creating tenants from a template or as a clone of another tenant.

The logic lives in the library (:func:`kvconf.tenants.provision`) so the CLI
creates tenants the same way; this module keeps the app's import path.
"""

from __future__ import annotations

from kvconf.tenants import provision

__all__ = ["provision"]
