"""Foreign or corrupt data in kvconf's keys: a write is refused with nothing written."""

from __future__ import annotations

import pytest

from kvconf import Store, Unavailable
from kvconf._redis.names import TenantKeys


async def test_foreign_redis_key_refuses_the_whole_write(store: Store, tenant: str) -> None:
    await store.set(tenant, "ns", "a", 1)
    tk = TenantKeys(tenant)
    await store.redis.set(tk.hist("other"), "not a zset")
    with pytest.raises(Unavailable):
        await store.set_many(tenant, "other", {"a": 2, "b": 2})
    with pytest.raises(Unavailable):
        await store.commit_across(tenant, {"ns": {"a": 2}, "other": {"b": 2}})
    assert (await store.get(tenant, "ns", "a")).value == 1
    assert await store.revision(tenant) == 1


@pytest.mark.parametrize("which", ["meta", "rev", "epoch", "log", "nss", "hash", "hist", "other"])
async def test_a_foreign_key_type_refuses_the_write_and_changes_nothing(
    store: Store, tenant: str, which: str
) -> None:
    await store.set_many(tenant, "ns", {"a": 1})
    await store.set_many(tenant, "other", {"b": 1})
    tk = TenantKeys(tenant)
    key = {
        "hash": tk.ns("ns"), "hist": tk.hist("ns"), "other": tk.hist("other"),
        "meta": tk.meta, "rev": tk.rev, "epoch": tk.epoch, "log": tk.log, "nss": tk.namespaces,
    }[which]  # fmt: skip
    raw = store.redis
    saved = await raw.dump(key)
    await raw.delete(key)
    await raw.rpush(key, "foreign")  # a list where kvconf keeps something else
    with pytest.raises(Unavailable) as caught:
        await store.commit_across(tenant, {"ns": {"a": 2}, "other": {"b": 2}})
    assert caught.value.to_dict()["reason"] == "corrupt_state"
    assert key in str(caught.value)
    await raw.delete(key)
    await raw.restore(key, 0, saved)
    assert await store.changes_since(tenant, 2) == []
    assert (await store.get(tenant, "ns", "a")).version == 1


@pytest.mark.parametrize(
    "rev", ["1.5", "inf", " 7", "010", "0x10", "1e3", "9223372036854775807", "seven"]
)
async def test_a_revision_incr_would_refuse_changes_nothing(
    store: Store, tenant: str, rev: str
) -> None:
    # The write logs its event before it increments the revision: a revision
    # INCR would refuse must be refused first, or the log would get an event
    # for a revision that was never committed.
    await store.set(tenant, "ns", "a", 1)
    tk = TenantKeys(tenant)
    await store.redis.set(tk.rev, rev)
    with pytest.raises(Unavailable) as caught:
        await store.set(tenant, "ns", "a", 2)
    assert caught.value.to_dict()["reason"] == "corrupt_state"
    assert await store.redis.zcard(tk.log) == 1
    assert await store.redis.get(tk.rev) == rev.encode()
    assert (await store.get(tenant, "ns", "a")).version == 1
