"""Layered effective reads, pure: shared by the Store and the Watcher.

First hit wins: the namespace's own value, the tenant's ``_defaults``, an
environment variable ``<PREFIX><KEY>`` (upper-cased, ``.`` and ``-`` as
``_``), the schema default.

>>> resolve("stale_timeout", {}, {}, {"KVCONF_DEFAULT_STALE_TIMEOUT": "25"},
...         "KVCONF_DEFAULT_", {"stale_timeout": KeySpec(type="int", default=15)}).value
25
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .models import Explanation, KeySpec, LayerValue
from .schema import coerce_text

__all__ = ["effective_keys", "env_name", "resolve"]

log = logging.getLogger("kvconf.layers")
_MISSING: Any = object()


def env_name(prefix: str, key: str) -> str:
    """The environment variable of ``key`` in the environment layer."""
    return prefix + key.upper().replace(".", "_").replace("-", "_")


def resolve(
    key: str,
    own: Mapping[str, Any],
    defaults: Mapping[str, Any],
    environ: Mapping[str, str],
    prefix: str,
    specs: Mapping[str, KeySpec],
) -> Explanation:
    """Explain the effective value of ``key``.

    ``own`` and ``defaults`` map keys to plain values (the namespace's and the
    tenant's ``_defaults``). An environment value that cannot be the key's
    type is skipped with a warning rather than served.
    """
    spec = specs.get(key)
    hits: list[LayerValue] = []
    value = own.get(key, _MISSING)
    if value is not _MISSING:
        hits.append(LayerValue("namespace", value))
    value = defaults.get(key, _MISSING)
    if value is not _MISSING:
        hits.append(LayerValue("tenant_defaults", value))
    name = env_name(prefix, key)
    text = environ.get(name)
    if text is not None:
        try:
            hits.append(LayerValue("environment", coerce_text(text, spec)))
        except ValueError as exc:
            log.warning("ignoring %s: %s", name, exc)
    if spec is not None and spec.default is not msgspec.UNSET:
        hits.append(LayerValue("schema_default", spec.default))
    sensitive = spec is not None and spec.sensitive
    if not hits:
        return Explanation(key=key, value=None, layer=None, sensitive=sensitive)
    return Explanation(
        key=key, value=hits[0].value, layer=hits[0].layer, shadowed=hits[1:], sensitive=sensitive
    )


def effective_keys(
    own: Iterable[str], defaults: Iterable[str], specs: Mapping[str, KeySpec]
) -> list[str]:
    """The keys an effective namespace view lists: any layer but the environment.

    The environment layer only fills keys known to another layer, so an
    unrelated variable never invents a key.
    """
    keys = set(own)
    keys.update(defaults)
    keys.update(k for k, s in specs.items() if s.default is not msgspec.UNSET)
    return sorted(keys)
