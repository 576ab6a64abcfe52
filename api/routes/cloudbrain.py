"""CloudBrain-compatible per-AI routes: a view of tenant ``default``, namespace ``ai-<id>``.

Existing agents call these exactly; values are rendered as strings, errors
keep the ``{"success": false, "error": "..."}`` shape (the one error handler
does that for every route under ``/api/v1/config``). The four known keys are
typed ``int`` by a schema on the tenant's ``_defaults``, installed on first use
(idempotent), so the layers give: the AI's own value > tenant defaults >
``KVCONF_DEFAULT_<KEY>`` > the schema default.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from kvconf._redis.names import DEFAULTS_NAMESPACE, validate_key
from kvconf.exceptions import KeyNotFound, SchemaProblem, SchemaViolation, TenantExists
from kvconf.layers import effective_keys, resolve
from kvconf.models import Entry, Explanation, KeySpec, Schema
from kvconf.schema import check_values, coerce_text
from kvconf.store import Store
from kvconf.watcher import Watcher

from ..cache import ReadCache, namespace_entries, stale_headers
from ..deps import (
    Access,
    Masker,
    access_to,
    cached_reader,
    masker,
    note_write,
    read_cache,
    resolve_access,
)
from ..errors import CLOUDBRAIN_PREFIX
from ..hot import hot
from ..models import (
    CloudConfig,
    CloudError,
    CloudKey,
    CloudKeyUpdated,
    CloudUpdated,
    body_doc,
    decode,
    respond,
    response_doc,
)
from ..query import refuse_unknown_query

__all__ = ["AI_TENANT", "KNOWN_KEYS", "ensure_schema", "router"]

AI_TENANT = "default"
#: The per-AI keys every agent knows, with their defaults.
KNOWN_KEYS: dict[str, int] = {
    "heartbeat_interval": 60,
    "stale_timeout": 15,
    "grace_period": 2,
    "max_sleep_time": 60,
}

router = APIRouter(
    prefix=CLOUDBRAIN_PREFIX,
    tags=["cloudbrain (per-AI)"],
    dependencies=[Depends(refuse_unknown_query)],
)
AiId = Annotated[int, PathParam(ge=0, description="The agent's numeric id.")]
ConfigKey = Annotated[str, PathParam(description="Configuration key.")]


def ai_namespace(request: Request) -> str | None:
    """The namespace (``ai-<id>``) of the path's ``ai_id`` (None when it is not an id).

    Namespace grants apply: ``default/ai-12`` is ``/api/v1/config/12``.
    """
    text: str = request.path_params.get("ai_id", "")
    return f"ai-{int(text)}" if text.isascii() and text.isdigit() else None


Reader = Annotated[Access, Depends(access_to("read", AI_TENANT, namespace=ai_namespace))]
Writer = Annotated[Access, Depends(access_to("write", AI_TENANT, namespace=ai_namespace))]


_installed: weakref.WeakKeyDictionary[Store, tuple[datetime, float]] = weakref.WeakKeyDictionary()
#: Seconds between re-checks (the tenant may be hard-deleted and recreated).
_RECHECK = 10.0
_locks: weakref.WeakKeyDictionary[Store, asyncio.Lock] = weakref.WeakKeyDictionary()


async def ensure_schema(store: Store, cache: ReadCache | None = None) -> datetime:
    """Install the per-AI key schema on ``default/_defaults`` if missing; idempotent.

    Returns the creation time of tenant ``default`` (the ``updated_at`` shown
    for values that come from the environment or a schema default). A read
    cache is told when the schema was installed (its watcher is replaced).
    """
    found = _installed.get(store)
    if found is not None and time.monotonic() < found[1]:
        return found[0]
    async with _locks.setdefault(store, asyncio.Lock()):
        found = _installed.get(store)
        if found is not None and time.monotonic() < found[1]:
            return found[0]
        with contextlib.suppress(TenantExists):
            await store.create_tenant(AI_TENANT)
        current = await store.get_schema(AI_TENANT, DEFAULTS_NAMESPACE)
        keys = dict(current.keys) if current is not None else {}
        missing = {
            k: KeySpec(type="int", default=v, min=0, description=f"per-AI {k} (seconds)")
            for k, v in KNOWN_KEYS.items()
            if k not in keys
        }
        if missing:
            try:
                await store.set_schema(
                    AI_TENANT,
                    DEFAULTS_NAMESPACE,
                    Schema(
                        keys={**keys, **missing},
                        description=current.description if current else "per-AI configuration",
                    ),
                    actor="kvconf-api",
                    reason="install the per-AI key schema",
                )
            finally:
                if cache is not None:
                    cache.forget(AI_TENANT)
        info = await store.info(AI_TENANT)
        created = info.created_at or datetime.now(UTC)
        _installed[store] = (created, time.monotonic() + _RECHECK)
        return created


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


async def _view(
    request: Request, access: Access, ai_id: int, keys: list[str] | None = None
) -> tuple[dict[str, Explanation], dict[str, str], Masker]:
    store = access.store
    created = await ensure_schema(store, read_cache(request))
    ns = f"ai-{ai_id}"
    cache, watcher = cached_reader(request, AI_TENANT)
    request.app.state.metrics.read(watcher is not None)
    if watcher is not None:
        assert cache is not None
        request.state.stale_headers = stale_headers(watcher)
        return _cached_view(cache, watcher, access, ns, created, keys)
    if keys is None:
        explained = await store.explain(AI_TENANT, ns)
    else:
        explained = {k: await store.explain_key(AI_TENANT, ns, k) for k in keys}
    state = await store.read_state(AI_TENANT, [ns, DEFAULTS_NAMESPACE])
    stamps: dict[str, str] = {}
    for key, exp in explained.items():
        layer = {"namespace": ns, "tenant_defaults": DEFAULTS_NAMESPACE}.get(exp.layer or "")
        entry = state.namespaces.get(layer or "", {}).get(key)
        stamps[key] = _iso(entry.updated_at if entry is not None else created)
    if cache is not None:
        cache.saw(AI_TENANT, state.epoch, state.revision)
        cache.found(AI_TENANT)
    return explained, stamps, await masker(access, ns)


def _cached_view(
    cache: ReadCache,
    watcher: Watcher,
    access: Access,
    ns: str,
    created: datetime,
    keys: list[str] | None,
) -> tuple[dict[str, Explanation], dict[str, str], Masker]:
    """:func:`_view` from the watcher's memory: the same layers, no Redis."""
    own_entries = namespace_entries(watcher, ns)
    default_entries = namespace_entries(watcher, DEFAULTS_NAMESPACE)
    own = {k: e.value for k, e in own_entries.items()}
    defaults = {k: e.value for k, e in default_entries.items()}
    specs = cache.specs(watcher, ns)
    names = (
        effective_keys(own, defaults, specs) if keys is None else [validate_key(k) for k in keys]
    )
    prefix = cache.settings.defaults_env_prefix
    explained: dict[str, Explanation] = {}
    stamps: dict[str, str] = {}
    for key in names:
        exp = explained[key] = resolve(key, own, defaults, os.environ, prefix, specs)
        entry: Entry | None = None
        if exp.layer == "namespace":
            entry = own_entries.get(key)
        elif exp.layer == "tenant_defaults":
            entry = default_entries.get(key)
        stamps[key] = _iso(entry.updated_at if entry is not None else created)
    return explained, stamps, Masker(None if access.secrets else specs)


@router.get(
    "/{ai_id}",
    summary="Every known key of one AI, effective values as strings",
    responses=response_doc(CloudConfig, errors=CloudError),
    operation_id="getAiConfig",
)
async def get_config(ai_id: AiId, request: Request, access: Reader) -> Response:
    """``{"success": true, "ai_id": 12, "configuration": {key: {value, updated_at}}}``."""
    return await _config(request, access, ai_id)


async def _config(request: Request, access: Access, ai_id: int) -> Response:
    explained, stamps, mask = await _view(request, access, ai_id)
    configuration = {
        k: {"value": _render(mask(k, e.value)), "updated_at": stamps[k]}
        for k, e in explained.items()
        if e.layer is not None
    }
    return respond(
        {"success": True, "ai_id": ai_id, "configuration": configuration},
        headers=getattr(request.state, "stale_headers", None),
    )


async def _coerce(store: Store, ai_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """Values typed by the schema; every key that cannot be is one problem, all listed at once."""
    specs = await store.specs(AI_TENANT, f"ai-{ai_id}")
    out: dict[str, Any] = {}
    problems: list[SchemaProblem] = []
    for key, raw in values.items():
        spec = specs.get(key)
        if spec is not None and spec.type == "int":
            if isinstance(raw, int) and not isinstance(raw, bool):
                out[key] = raw
                continue
            if not isinstance(raw, str):
                problems.append(SchemaProblem(key, "type", "must be an integer"))
                continue
            try:
                out[key] = coerce_text(raw, spec)
            except ValueError:
                problems.append(SchemaProblem(key, "type", "is not an integer"))
        elif isinstance(raw, str) and spec is not None:
            try:
                out[key] = coerce_text(raw, spec)
            except ValueError:
                problems.append(SchemaProblem(key, "type", f"is not a valid {spec.type}"))
        else:
            out[key] = raw
    if problems:
        try:  # the schema's verdict on the values that did convert, so every problem shows
            check_values(specs, out)
        except SchemaViolation as exc:
            problems.extend(exc.problems)
        raise SchemaViolation(sorted(problems, key=lambda p: p.key))
    return out


@router.put(
    "/{ai_id}",
    summary="Update several keys of one AI in one atomic change set",
    openapi_extra=body_doc(dict[str, str | int]),
    responses=response_doc(CloudUpdated, errors=CloudError),
    operation_id="putAiConfig",
)
async def put_config(ai_id: AiId, request: Request, access: Writer) -> Response:
    """Body ``{"stale_timeout": "30", ...}``; all keys are one revision."""
    await ensure_schema(access.store, read_cache(request))
    body: dict[str, Any] = decode(await request.body(), dict[str, str | int])
    values = await _coerce(access.store, ai_id, body)
    result = await access.store.set_many(
        AI_TENANT, f"ai-{ai_id}", values, actor=access.actor, reason=access.why()
    )
    request.app.state.metrics.wrote("cloudbrain")
    note_write(request, AI_TENANT, result)
    keys = list(body)
    return respond(
        {
            "success": True,
            "ai_id": ai_id,
            "updated_keys": keys,
            "message": f"Updated {len(keys)} configuration keys",
        }
    )


@router.get(
    "/{ai_id}/{key}",
    summary="One key of one AI",
    responses=response_doc(CloudKey, errors=CloudError),
    operation_id="getAiConfigKey",
)
async def get_config_key(ai_id: AiId, key: ConfigKey, request: Request, access: Reader) -> Response:
    """``{"success": true, "ai_id", "config_key", "config_value", "updated_at"}``."""
    return await _config_key(request, access, ai_id, key)


async def _config_key(request: Request, access: Access, ai_id: int, key: str) -> Response:
    explained, stamps, mask = await _view(request, access, ai_id, [key])
    exp = explained[key]
    if exp.layer is None:
        raise KeyNotFound(AI_TENANT, f"ai-{ai_id}", [key])
    return respond(
        {
            "success": True,
            "ai_id": ai_id,
            "config_key": key,
            "config_value": _render(mask(key, exp.value)),
            "updated_at": stamps[key],
        },
        headers=getattr(request.state, "stale_headers", None),
    )


class ConfigValue(msgspec.Struct):
    """Body of ``PUT /api/v1/config/{ai_id}/{key}``."""

    config_value: str | int


@router.put(
    "/{ai_id}/{key}",
    summary="Set one key of one AI",
    openapi_extra=body_doc(ConfigValue),
    responses=response_doc(CloudKeyUpdated, errors=CloudError),
    operation_id="putAiConfigKey",
)
async def put_config_key(ai_id: AiId, key: ConfigKey, request: Request, access: Writer) -> Response:
    """Body ``{"config_value": "480"}``."""
    await ensure_schema(access.store, read_cache(request))
    body: ConfigValue = decode(await request.body(), ConfigValue)
    values = await _coerce(access.store, ai_id, {key: body.config_value})
    result = await access.store.set(
        AI_TENANT, f"ai-{ai_id}", key, values[key], actor=access.actor, reason=access.why()
    )
    request.app.state.metrics.wrote("cloudbrain")
    note_write(request, AI_TENANT, result)
    mask = await masker(access, f"ai-{ai_id}")
    rendered = _render(mask(key, values[key]))
    return respond(
        {
            "success": True,
            "ai_id": ai_id,
            "config_key": key,
            "config_value": rendered,
            "message": "Configuration updated successfully",
        }
    )


def _ai_id(request: Request) -> int | None:
    """The path's ``ai_id`` when FastAPI would accept it (else None: let it answer)."""
    text: str = request.path_params["ai_id"]
    if not text.isascii() or not text.isdigit() or request.scope["query_string"]:
        return None
    return int(text)


async def _get_config_hot(request: Request) -> Response | None:
    ai_id = _ai_id(request)
    if ai_id is None:
        return None
    access = await resolve_access(request, AI_TENANT, "read", f"ai-{ai_id}")
    return await _config(request, access, ai_id)


async def _get_config_key_hot(request: Request) -> Response | None:
    ai_id = _ai_id(request)
    if ai_id is None:
        return None
    access = await resolve_access(request, AI_TENANT, "read", f"ai-{ai_id}")
    return await _config_key(request, access, ai_id, request.path_params["key"])


hot(router, get_config, _get_config_hot)
hot(router, get_config_key, _get_config_key_hot)
