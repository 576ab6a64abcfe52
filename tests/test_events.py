"""The change event has one owner: every producer (Lua and Python) emits ChangeEvent's fields."""

from __future__ import annotations

from pathlib import Path

import msgspec

from kvconf import ChangeEvent, KeyChange, Schema, Store
from kvconf._codec import decode_event, reset_event
from kvconf._redis.names import TenantKeys
from kvconf.snapshot import restore, save

EVENT_FIELDS = set(ChangeEvent.__struct_fields__)
#: What every producer writes; ``op`` only on ``tenant`` events, ``request_id``
#: only on changes an API request made.
EVENT_WRITTEN = EVENT_FIELDS - {"op", "request_id"}
CHANGE_FIELDS = set(KeyChange.__struct_fields__)


def _pin(raw: bytes) -> ChangeEvent:
    """``raw`` decodes as a ChangeEvent and names exactly its fields."""
    as_dict = msgspec.json.decode(raw)
    assert EVENT_WRITTEN <= set(as_dict) <= EVENT_FIELDS, raw
    assert ("op" in as_dict) >= (as_dict["type"] == "tenant"), raw
    for change in as_dict["changes"]:
        assert set(change) <= CHANGE_FIELDS, change
        assert {"key", "version", "old_version"} <= set(change)
    return decode_event(raw)


async def test_every_script_event_is_a_change_event(store: Store, tenant: str) -> None:
    await store.create_tenant(tenant, actor="ops", reason="new")
    await store.set(tenant, "ai-12", "port", 80)
    await store.set_many(tenant, "ai-12", {"a": [], "b": {"x": 1.5}})
    await store.delete(tenant, "ai-12", "a")
    await store.commit_across(tenant, {"n1": {"k": 1}, "n2": {"k": 2}})
    await store.set_schema(tenant, "ai-12", msgspec.convert({"keys": {}}, Schema))
    tk = TenantKeys(tenant)
    await store.delete_tenant(tenant)
    await store.undelete_tenant(tenant)
    events = [_pin(raw) for raw in await store.redis.zrange(tk.log, 0, -1)]
    assert [e.type for e in events] == ["tenant"] + ["change"] * 4 + ["schema"] + ["tenant"] * 2
    assert [e.op for e in events if e.type == "tenant"] == ["create", "soft_delete", "undelete"]
    assert [e.revision for e in events] == list(range(1, 9))
    assert events[2].changes[0].value == []  # a value is never re-encoded by Lua
    assert events[3].changes[0].deleted
    assert {events[4].namespace_of(c) for c in events[4].changes} == {"n1", "n2"}


def test_the_python_reset_event_is_a_change_event() -> None:
    event = _pin(reset_event("acme", "e1", 7, "ops", "restore"))
    assert (event.type, event.revision, event.changes) == ("reset", 7, [])


async def test_restore_script_and_transaction_events_are_change_events(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    await store.set(tenant, "ns", "k", 1)
    saved = await save(store, tmp_path, [tenant])
    await store.set(tenant, "ns", "k", 2)
    await restore(store, saved.path, mode="merge", safety_dir=tmp_path / "s")  # restore.lua
    await restore(store, saved.path, mode="replace", safety_dir=tmp_path / "s")  # MULTI/EXEC
    raws = await store.redis.zrange(TenantKeys(tenant).log, 0, -1)
    events = [_pin(raw) for raw in raws]
    # a merge logs its new versions as a change, a replace resets
    assert [e.type for e in events][-2:] == ["change", "reset"]
