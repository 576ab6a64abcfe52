"""The service tier's watch side: the atomic state, fan-out to many streams, progress, 503."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from fastapi import FastAPI

from .api_helpers import ADMIN, client, make_token, running_app
from .redis_server import RedisServer


@pytest.fixture
async def app(backend_url: str) -> AsyncIterator[FastAPI]:
    async with running_app(backend_url, admin_token=ADMIN) as app:
        yield app


def events(text: str) -> list[tuple[str, str, Any]]:
    """(event, id, data) of each SSE event in a response body (comments skipped)."""
    found = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, sep, value = line.partition(": ")
            if sep and name in ("event", "id", "data"):
                fields[name] = value
        if "event" in fields:
            data = msgspec.json.decode(fields["data"]) if "data" in fields else None
            found.append((fields["event"], fields.get("id", ""), data))
    return found


async def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def open_streams(app: FastAPI) -> int:
    """Watch streams the app is serving (its metrics' registry of streams)."""
    return len(app.state.metrics.streams)


async def test_state_is_one_revision_masked_and_restricted(app: FastAPI, tenant: str) -> None:
    base = f"/api/v1/tenants/{tenant}"
    async with client(app, ADMIN) as c:
        schema = {"keys": {"pw": {"type": "str", "sensitive": True}}}
        assert (await c.put(f"{base}/namespaces/a/schema", json=schema)).is_success
        assert await c.post(f"{base}/namespaces/a", json={"values": {"pw": "s3cr3t", "n": 1}})
        assert (await c.put(f"{base}/namespaces/b/keys/k", json={"value": "bee"})).is_success
        r = await c.put(f"{base}/namespaces/_defaults/keys/d", json={"value": "dflt"})
        assert r.is_success
        full = (await c.get(f"{base}/state")).json()
    info = await app.state.store.info(tenant)
    assert full["revision"] == info.revision
    assert full["epoch"] == info.epoch
    assert set(full["namespaces"]) == {"a", "b", "_defaults"}
    assert full["namespaces"]["a"]["pw"]["value"] == "s3cr3t"  # admin: secrets
    assert full["namespaces"]["a"]["n"] == {
        **full["namespaces"]["a"]["n"], "value": 1, "version": 1,
    }  # fmt: skip
    assert set(full["namespaces"]["a"]["n"]) == {
        "value", "version", "revision", "updated_at", "updated_by",
    }  # fmt: skip
    assert full["schemas"]["a"]["keys"]["pw"]["sensitive"] is True
    reader = await make_token(app, f"r-{tenant}", {tenant: ["read"]})
    scoped = await make_token(app, f"s-{tenant}", {f"{tenant}/a": ["read"]})
    async with client(app, reader) as c:
        some = (await c.get(f"{base}/state", params={"namespaces": "a"})).json()
        assert set(some["namespaces"]) == {"a", "_defaults"}  # effective values need it
        assert some["namespaces"]["a"]["pw"]["value"] == "***"
        assert "s3cr3t" not in str(some)
        assert (await c.get(f"{base}/state", params={"namespaces": ""})).status_code == 422
        assert (await c.get(f"{base}/state", params={"namespaces": "b,x y"})).status_code == 422
    async with client(app, scoped) as c:
        mine = (await c.get(f"{base}/state")).json()
        assert set(mine["namespaces"]) == {"a", "_defaults"}
        assert set(mine["schemas"]) <= {"a", "_defaults"}
        assert "bee" not in str(mine)
        assert (await c.get(f"{base}/state", params={"namespaces": "b"})).status_code == 404


async def test_two_hundred_streams_all_receive_a_put(app: FastAPI, tenant: str) -> None:
    base = f"/api/v1/tenants/{tenant}"
    async with client(app, ADMIN) as c:
        assert (await c.put(f"{base}/namespaces/a/keys/k", json={"value": 0})).is_success
        start = (await c.get(f"{base}")).json()["revision"]
        for i in range(1, 4):  # history a resuming stream must catch up from the log
            assert (await c.put(f"{base}/namespaces/a/keys/k", json={"value": i})).is_success
    n = 200
    async with client(app, ADMIN) as c:
        live = [
            asyncio.create_task(c.get(f"{base}/watch", params={"max_events": 1})) for _ in range(n)
        ]
        resumed = asyncio.create_task(
            c.get(f"{base}/watch", params={"max_events": 4}, headers={"Last-Event-ID": str(start)})
        )
        await until(lambda: open_streams(app) >= n)
        await asyncio.sleep(0.2)
        r = await c.put(f"{base}/namespaces/a/keys/k", json={"value": "fan-out"})
        assert r.is_success
        bodies = await asyncio.wait_for(asyncio.gather(*live, resumed), 30)
    for body in bodies[:n]:
        assert body.status_code == 200
        (event,) = events(body.text)
        assert event[0] == "change"
        assert event[2]["changes"][0]["value"] == "fan-out"
    got = events(bodies[n].text)
    assert [int(e[1]) for e in got] == list(range(start + 1, start + 5))  # gap-free resume
    assert got[-1][2]["changes"][0]["value"] == "fan-out"
    await until(lambda: app.state.fanout.open_streams == 0)
    await until(lambda: not app.state.fanout.feeds)  # the last stream stopped the feed


async def test_a_restricted_stream_gets_progress_for_other_namespaces(
    app: FastAPI, tenant: str
) -> None:
    base = f"/api/v1/tenants/{tenant}"
    async with client(app, ADMIN) as c:
        assert (await c.put(f"{base}/namespaces/a/keys/k", json={"value": 0})).is_success
    scoped = await make_token(app, f"p-{tenant}", {f"{tenant}/a": ["read"]})

    async def writes() -> None:
        await until(lambda: open_streams(app) >= 2)
        await asyncio.sleep(0.2)
        async with client(app, ADMIN) as c:
            r = await c.put(f"{base}/namespaces/b/keys/k", json={"value": "hidden-b"})
            assert r.is_success
            # apart, so the streams see the hidden revision on its own: a visible
            # event right behind it would advance the client's revision itself
            await asyncio.sleep(0.5)
            r = await c.put(f"{base}/namespaces/a/keys/k", json={"value": "seen-a"})
            assert r.is_success

    writer = asyncio.create_task(writes())
    async with client(app, scoped) as mine, client(app, ADMIN) as admin:
        by_token, by_param = await asyncio.wait_for(
            asyncio.gather(
                mine.get(f"{base}/watch", params={"max_events": 2}),
                admin.get(f"{base}/watch", params={"max_events": 2, "namespaces": "a"}),
            ),
            15,
        )
    await writer
    for r in (by_token, by_param):
        assert r.status_code == 200
        got = events(r.text)
        assert [e[0] for e in got] == ["progress", "change"], r.text
        progress, change = got
        assert progress[2] == {"revision": int(progress[1])}
        assert int(change[1]) == int(progress[1]) + 1
        assert change[2]["changes"][0]["value"] == "seen-a"
        assert "hidden-b" not in r.text


async def test_streams_past_max_streams_are_refused_with_503(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url, admin_token=ADMIN, max_streams=3) as app:
        url = f"/api/v1/tenants/{tenant}/watch"
        async with client(app, ADMIN) as c:
            assert await c.put(f"/api/v1/tenants/{tenant}/namespaces/a/keys/k", json={"value": 1})
            held = [asyncio.create_task(c.get(url)) for _ in range(3)]
            await until(lambda: open_streams(app) == 3)
            r = await asyncio.wait_for(c.get(url), 10)
            assert r.status_code == 503
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "too_many_streams"
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)
            await until(lambda: open_streams(app) == 0)
            r = await asyncio.wait_for(c.get(url, params={"max_events": 1, "from_revision": 0}), 10)
            assert r.status_code == 200


def _redis_cost(server: RedisServer) -> tuple[int, int]:
    """(connected clients, commands so far not counting INFO/CLIENT) of ``server``."""
    r = server.client()
    try:
        clients = len(r.client_list())
        stats = r.info("commandstats")
    finally:
        r.close()
    calls = sum(
        int(v["calls"])
        for k, v in stats.items()
        if k not in ("cmdstat_info", "cmdstat_client|list")
    )
    return clients - 1, calls


async def test_idle_streams_cost_redis_nothing(redis_server: RedisServer, tenant: str) -> None:
    """50 idle streams cost Redis what 1 does: no connection and no command per stream."""
    async with running_app(redis_server.url, admin_token=ADMIN) as app:
        url = f"/api/v1/tenants/{tenant}/watch"
        async with client(app, ADMIN) as c:
            assert await c.put(f"/api/v1/tenants/{tenant}/namespaces/a/keys/k", json={"value": 1})
            streams: list[asyncio.Task[httpx.Response]] = []
            measured = []
            for n in (1, 50):
                while len(streams) < n:
                    streams.append(asyncio.create_task(c.get(url)))
                    await until(lambda: open_streams(app) == len(streams))
                await asyncio.sleep(1.0)  # settle
                clients0, calls0 = _redis_cost(redis_server)
                await asyncio.sleep(3.0)
                clients1, calls1 = _redis_cost(redis_server)
                measured.append((max(clients0, clients1), (calls1 - calls0) / 3.0))
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
    (clients_1, rate_1), (clients_50, rate_50) = measured
    print("idle redis cost (clients, commands/s) at 1 and 50 streams:", measured)
    assert clients_50 <= clients_1 + 1, measured
    assert rate_50 <= rate_1 * 1.5 + 1, measured


def _frames(body: bytes) -> bytes:
    """A stream's bytes without its heartbeats (sent at times of their own)."""
    return body.replace(b": ping\r\n\r\n", b"")


async def test_frames_written_by_the_feed_are_the_streams_own_bytes(
    app: FastAPI, tenant: str
) -> None:
    """A parked stream written to by the feed gets what the generator path sends.

    The admin's stream sees everything unmasked: its first records go out
    from the feed itself (``direct_writes``), its last one from its task (it
    ends the stream). A reader without ``secrets`` takes every record
    through its task; with nothing sensitive the bytes are the same.
    """
    base = f"/api/v1/tenants/{tenant}"
    async with client(app, ADMIN) as c:
        assert (await c.put(f"{base}/namespaces/a/keys/k", json={"value": 0})).is_success
    reader = await make_token(app, f"d-{tenant}", {tenant: ["read"]})
    before = app.state.fanout.direct_writes

    async def writes() -> None:
        await until(lambda: open_streams(app) >= 2)
        await asyncio.sleep(0.2)
        async with client(app, ADMIN) as c:
            for i in range(3):
                r = await c.put(f"{base}/namespaces/a/keys/k", json={"value": f"v{i}"})
                assert r.is_success
                await asyncio.sleep(0.1)
            both = [
                c.put(f"{base}/namespaces/b/keys/k", json={"value": "b"}),
                c.post(f"{base}/namespaces/a", json={"values": {"x": 1, "y": [1, "two"]}}),
            ]  # close together: the feed may hand both over in one write
            assert all(r.is_success for r in await asyncio.gather(*both))

    writer = asyncio.create_task(writes())
    async with client(app, ADMIN) as admin, client(app, reader) as mine:
        direct, through_task = await asyncio.wait_for(
            asyncio.gather(
                admin.get(f"{base}/watch", params={"max_events": 5}),
                mine.get(f"{base}/watch", params={"max_events": 5}),
            ),
            20,
        )
    await writer
    assert direct.status_code == through_task.status_code == 200
    assert [e[0] for e in events(direct.text)] == ["change"] * 5
    assert _frames(direct.content) == _frames(through_task.content)
    assert app.state.fanout.direct_writes - before >= 2  # the feed wrote some itself
    await until(lambda: app.state.fanout.open_streams == 0)


async def test_a_stream_written_by_the_feed_still_masks_and_ends_on_revocation(
    app: FastAPI, tenant: str
) -> None:
    """Masking and re-authentication hold whichever path a record takes.

    A token with ``secrets`` parks on the feed's direct writes; once revoked in
    this process its stream ends with an error before the next record. A
    reader's stream beside it never sees the sensitive value.
    """
    base = f"/api/v1/tenants/{tenant}"
    async with client(app, ADMIN) as c:
        schema = {"keys": {"pw": {"type": "str", "sensitive": True}}}
        assert (await c.put(f"{base}/namespaces/a/schema", json=schema)).is_success
    full = await make_token(app, f"f-{tenant}", {tenant: ["read", "secrets"]})
    reader = await make_token(app, f"m-{tenant}", {tenant: ["read"]})
    before = app.state.fanout.direct_writes

    async def writes() -> None:
        await until(lambda: open_streams(app) >= 2)
        await asyncio.sleep(0.2)
        async with client(app, ADMIN) as c:
            r = await c.put(f"{base}/namespaces/a/keys/pw", json={"value": "s3cr3t-1"})
            assert r.is_success
            await until(lambda: app.state.fanout.direct_writes > before)
            assert (await c.delete(f"/api/v1/tokens/f-{tenant}")).status_code == 200
            r = await c.put(f"{base}/namespaces/a/keys/pw", json={"value": "after-revoke"})
            assert r.is_success

    writer = asyncio.create_task(writes())
    async with client(app, full) as c1, client(app, reader) as c2:
        revoked, masked = await asyncio.wait_for(
            asyncio.gather(
                c1.get(f"{base}/watch", params={"max_events": 5}),
                c2.get(f"{base}/watch", params={"max_events": 2}),
            ),
            20,
        )
    await writer
    got = events(revoked.text)
    assert [e[0] for e in got] == ["change", "error"], revoked.text
    assert got[0][2]["changes"][0]["value"] == "s3cr3t-1"  # secrets: shown
    assert got[1][2]["code"] == "unauthorized"
    assert "after-revoke" not in revoked.text
    values = [e[2]["changes"][0]["value"] for e in events(masked.text)]
    assert values == ["***", "***"]
    assert "s3cr3t" not in masked.text
    assert "after-revoke" not in masked.text


async def test_an_outlet_write_that_must_wait_is_finished_before_the_next() -> None:
    """A send that suspends (a slow client) is kept and finished in order by the stream's task."""
    from kvconf.api.sse import Outlet

    loop = asyncio.get_running_loop()
    sent: list[bytes] = []
    gate: asyncio.Future[None] = loop.create_future()

    async def send(message: dict[str, Any]) -> None:
        if not gate.done():
            await gate  # the transport's buffer is full until the client reads
        sent.append(message["body"])

    gone: asyncio.Future[None] = loop.create_future()
    outlet = Outlet()
    assert not outlet.write(b"early")  # not open: the task sends
    outlet.open(send, gone)
    assert outlet.write(b"one")
    assert outlet.pending is not None
    assert not outlet.ready
    assert not outlet.write(b"two")  # refused while one waits: nothing sent out of order
    gate.set_result(None)
    await outlet.drain()
    assert sent == [b"one"]
    assert outlet.ready
    assert outlet.write(b"two")  # finishes at once now
    assert sent == [b"one", b"two"]
    gone.set_result(None)
    assert not outlet.write(b"three")  # the client went away
    assert sent == [b"one", b"two"]


async def test_a_streams_own_frame_that_must_wait_is_sent_without_a_later_one() -> None:
    """A stream's own frame written while the client reads slowly goes out once it can.

    The stream yields one frame and then has nothing more to say for a long
    while: the frame must not sit half-sent until the next one.
    """
    from kvconf.api.sse import EventStream, Outlet

    loop = asyncio.get_running_loop()
    sent: list[bytes] = []
    gate: asyncio.Future[None] = loop.create_future()
    quiet = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        yield b"data: one\r\n\r\n"
        await quiet.wait()  # nothing more for now

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not gate.done():
            await gate  # the transport's buffer is full until the client reads
        sent.append(message.get("body", b""))

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    response = EventStream(frames(), outlet=Outlet())
    scope = {"type": "http", "method": "GET", "headers": []}
    serving = asyncio.create_task(response(scope, receive, send))
    await asyncio.sleep(0.05)
    assert sent == [b""]  # the response's start only: the frame waits for the client
    gate.set_result(None)
    await until(lambda: b"data: one\r\n\r\n" in sent, timeout=2.0)
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving


async def test_under_uvicorn_frames_go_straight_to_the_transport(
    app: FastAPI, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under uvicorn (httptools) a stream's frames skip the ASGI send: valid chunks all the same.

    The feed's writes and the stream's own frames go on uvicorn's transport
    as HTTP/1.1 chunks (a fifth of the fan-out's cost at 5,000 streams is
    the ASGI send). Fails when uvicorn's request cycle stops offering what
    :func:`kvconf.api.sse._chunked_transport` relies on (the fallback, the
    ASGI send, then takes every frame).
    """
    import socket

    import uvicorn
    from uvicorn.protocols.http import httptools_impl

    streamed: list[bytes] = []
    original = httptools_impl.RequestResponseCycle.send
    direct_before = app.state.fanout.direct_writes

    async def spy(self: Any, message: Any) -> None:
        if message["type"] == "http.response.body" and message.get("more_body"):
            streamed.append(message["body"])
        await original(self, message)

    monkeypatch.setattr(httptools_impl.RequestResponseCycle, "send", spy)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools",
                            lifespan="off", log_level="warning")  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}/api/v1/tenants/{tenant}"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    try:
        await until(lambda: server.started)
        async with httpx.AsyncClient(headers=headers, timeout=20) as c:
            assert (await c.put(f"{base}/namespaces/a/keys/k", json={"value": -1})).is_success

            async def writes() -> None:
                await until(lambda: open_streams(app) >= 1)
                await asyncio.sleep(0.7)  # a heartbeat first
                for i in range(3):
                    r = await c.put(f"{base}/namespaces/a/keys/k", json={"value": i})
                    assert r.is_success
                    await asyncio.sleep(0.1)

            writer = asyncio.create_task(writes())
            watched = await c.get(f"{base}/watch", params={"max_events": 3, "heartbeat": 0.5})
            await writer
    finally:
        server.should_exit = True
        await serving
    assert watched.status_code == 200
    got = events(watched.text)
    assert [(e[0], e[2]["changes"][0]["value"]) for e in got] == [("change", i) for i in range(3)]
    assert [int(e[1]) for e in got] == sorted(int(e[1]) for e in got)
    assert b": ping" in watched.content  # the stream's own heartbeats came through too
    assert streamed == []  # no frame took the ASGI send
    assert app.state.fanout.direct_writes > direct_before  # the feed wrote some itself


def _slow_first_feed_read(monkeypatch: pytest.MonkeyPatch, tenant: str) -> asyncio.Event:
    """Hold the first read of ``tenant``'s new feed (Redis slow to answer) until it is set."""
    from kvconf.api.fanout import TenantFeed

    gate = asyncio.Event()
    step = TenantFeed._step

    async def slow_first_step(self: TenantFeed) -> None:
        if self.last is None and self.tenant == tenant:
            await gate.wait()
        await step(self)

    monkeypatch.setattr(TenantFeed, "_step", slow_first_step)
    return gate


async def test_a_stream_that_joined_before_its_feed_primed_misses_no_record(
    app: FastAPI, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis slow to answer the feed's first read: a stream starts from the log, then the feed's.

    The feed primes at the tenant's revision when its first read returns, and
    hands out only the records after it: a record committed between the
    stream's own read of the log and the feed's priming must still reach the
    stream (it reads the log again once the feed has primed).
    """
    base = f"/api/v1/tenants/{tenant}"
    async with client(app, ADMIN) as c:
        assert (await c.put(f"{base}/namespaces/a/keys/k", json={"value": -1})).is_success
    gate = _slow_first_feed_read(monkeypatch, tenant)
    app.state.fanout.prime_timeout = 0.05

    def parked() -> bool:
        feed = app.state.fanout.feeds.get(tenant)
        return feed is not None and any(sub.direct is not None for sub in feed.subs)

    async def writes() -> None:
        await until(parked)  # the stream read the log itself and waits for the feed
        async with client(app, ADMIN) as c:
            r = await c.put(f"{base}/namespaces/a/keys/k", json={"value": 0})
            assert r.is_success
            gate.set()  # the feed primes after the write: it never hands that record out
            await until(lambda: app.state.fanout.revision(tenant) is not None)
            r = await c.put(f"{base}/namespaces/a/keys/k", json={"value": 1})
            assert r.is_success

    writer = asyncio.create_task(writes())
    async with client(app, ADMIN) as c:
        watched = await asyncio.wait_for(c.get(f"{base}/watch", params={"max_events": 2}), 20)
    await writer
    got = events(watched.text)
    assert [(e[0], e[2]["changes"][0]["value"]) for e in got] == [("change", 0), ("change", 1)]


async def test_a_stream_cancelled_while_joining_leaves_no_subscription(
    app: FastAPI, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream cancelled while it waits for a new feed to prime takes its place back.

    It never learned of the feed, so it cannot leave it itself: left behind,
    its subscription would keep the tenant's feed running for good.
    """
    from kvconf.api.fanout import Subscription

    gate = _slow_first_feed_read(monkeypatch, tenant)
    fanout = app.state.fanout
    joining = asyncio.create_task(fanout.join(tenant, Subscription()))
    await until(lambda: tenant in fanout.feeds)
    await asyncio.sleep(0.05)
    joining.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await joining
    gate.set()
    assert tenant not in fanout.feeds  # its only stream gone: the feed stops
