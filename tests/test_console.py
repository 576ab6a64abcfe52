"""The web console (``api/routes/console.py``, ``api/console/``).

Non-browser tests drive the app in-process. Browser tests start a real
``kvconf serve`` per backend (embedded and the real redis-server fixture) and
drive Debian's Chromium through Playwright; every request to another host is
aborted and recorded, and the test fails if one happened. They skip when
Chromium or Playwright is missing, unless ``KVCONF_TEST_REQUIRE_BROWSER`` is
set (then they fail). Screenshots land in ``tests/artifacts/console/``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from kvconf.api.routes.console import ASSETS, CSP

from . import serve_process
from .api_helpers import ADMIN, client, running_app
from .redis_server import RedisServer
from .serve_process import ROOT, forget_tokens

ARTIFACTS = ROOT / "tests" / "artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
REQUIRE_BROWSER = bool(os.environ.get("KVCONF_TEST_REQUIRE_BROWSER"))
HAVE_BROWSER = Path(CHROMIUM).exists() and importlib.util.find_spec("playwright") is not None

browser_test = pytest.mark.skipif(
    not HAVE_BROWSER and not REQUIRE_BROWSER,
    reason="needs /usr/bin/chromium and playwright (set KVCONF_TEST_REQUIRE_BROWSER to insist)",
)


# ------------------------------------------------------------------ no browser


async def test_root_redirects_to_the_console_and_assets_carry_the_csp(backend_url: str) -> None:
    async with running_app(backend_url, admin_token=ADMIN) as app, client(app) as c:
        r = await c.get("/")
        assert r.status_code == 307
        assert r.headers["location"] == "/ui/"
        assert (await c.get("/ui")).headers["location"] == "/ui/"
        for path, kind in [
            ("/ui/", "text/html"),
            ("/ui/index.html", "text/html"),
            ("/ui/console.js", "text/javascript"),
            ("/ui/console.css", "text/css"),
        ]:
            r = await c.get(path)  # no token: the shell is public, the data is not
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith(kind)
            assert r.headers["content-security-policy"] == CSP
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["x-content-type-options"] == "nosniff"
        for path in ("/ui/nope.js", "/ui/..%2Fapp.py", "/ui/%2e%2e"):
            r = await c.get(path)
            assert r.status_code == 404, path
        assert (await c.get("/api/v1/tenants")).status_code == 401


def test_csp_parts_and_no_inline_code() -> None:
    parts = {p.split()[0]: p.split()[1:] for p in CSP.split("; ")}
    assert parts["default-src"] == ["'self'"]
    assert parts["script-src"] == ["'self'"]
    assert parts["style-src"] == ["'self'"]
    assert parts["connect-src"] == ["'self'"]
    assert parts["frame-ancestors"] == ["'none'"]
    assert parts["base-uri"] == ["'none'"]
    html = (ASSETS / "index.html").read_text()
    assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", html))
    assert "style=" not in html
    assert "<style" not in html
    assert re.search(r"\son[a-z]+=", html) is None
    js = (ASSETS / "console.js").read_text()
    for banned in (
        "eval(",
        "new Function",
        ".innerHTML",
        ".outerHTML",
        "document.write",
        "http://",
    ):
        assert banned not in js, banned
    assert "localStorage" not in js  # the token lives in sessionStorage only


def test_console_files_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "console/*" in config["tool"]["setuptools"]["package-data"]["kvconf.api"]
    assert {p.name for p in ASSETS.iterdir()} >= {"index.html", "console.js", "console.css"}


# ------------------------------------------------------------------ a real server


class Server:
    """A running ``kvconf serve``: its base URL, admin token and backend name."""

    def __init__(self, base: str, admin: str, backend: str) -> None:
        self.base = base
        self.admin = admin
        self.backend = backend

    def http(self, token: str | None = None) -> httpx.Client:
        """A REST client (default: as the admin)."""
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        return httpx.Client(base_url=self.base, headers=headers, timeout=10)

    def token(self, name: str, grants: dict[str, list[str]]) -> str:
        """A new API token."""
        with self.http() as h:
            r = h.post("/api/v1/tokens", json={"name": name, "grants": grants})
            assert r.status_code == 201, r.text
            text: str = r.json()["token"]
            return text


@contextmanager
def serving(data: Path, redis_url: str | None, admin: str | None) -> Iterator[str]:
    """``kvconf serve`` on a free loopback port; yields its base URL."""
    try:
        with serve_process.serving(data, redis_url, admin) as (base, _proc):
            yield base
    finally:
        if redis_url is not None:  # tokens left on the shared server close others' open mode
            forget_tokens(redis_url)


@pytest.fixture(scope="module", params=["embedded", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One ``kvconf serve`` with an admin token per backend for the module."""
    if not HAVE_BROWSER and not REQUIRE_BROWSER:
        pytest.skip("needs /usr/bin/chromium and playwright")
    url = None
    if request.param == "redis":
        shared: RedisServer = request.getfixturevalue("shared_redis")
        url = shared.url
    admin = "console-admin-" + uuid.uuid4().hex
    with serving(tmp_path_factory.mktemp("console") / "data", url, admin) as base:
        yield Server(base, admin, request.param)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium under Playwright for the module."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)  # a shared 2-core machine: be patient, not flaky
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class Guard:
    """Records (and aborts) every request to a host other than the server."""

    def __init__(self, base: str) -> None:
        self.host = urlsplit(base).netloc
        self.foreign: list[str] = []

    def __call__(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).netloc != self.host:
            self.foreign.append(url)
            route.abort()
        else:
            route.continue_()


@contextmanager
def browsing(browser: Any, base: str, width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A fresh page that may only talk to ``base``; fails on script errors."""
    context = browser.new_context(
        viewport={"width": width, "height": height}, reduced_motion="reduce"
    )
    context.set_default_timeout(15_000)
    guard = Guard(base)
    context.route("**/*", guard)
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            errors.append(message.text)

    page.on("console", on_console)
    try:
        yield page
    finally:
        context.close()
    assert guard.foreign == [], "the console called another host"
    assert errors == [], errors


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh 1280 by 800 page that may only talk to the server."""
    with browsing(browser, server.base) as opened:
        yield opened


@pytest.fixture
def phone(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh phone-sized (390 by 844) page that may only talk to the server."""
    with browsing(browser, server.base, 390, 844) as opened:
        yield opened


def shot(page: Any, server: Server, name: str) -> None:
    """Save a screenshot under tests/artifacts/console/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{server.backend}-{name}.png"))


def sign_in(page: Any, server: Server, token: str | None = None) -> None:
    """Open the server's root and sign in with ``token`` (default: the admin's)."""
    page.goto(server.base + "/")
    assert page.url.startswith(server.base + "/ui/")
    page.get_by_label("Token").fill(token or server.admin)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()
    page.locator("main section h1").first.wait_for()  # the first page is rendered


def seed(server: Server, tenant: str) -> None:
    """A tenant with a schema, a sensitive key and a few keys in namespace ``ai-12``."""
    schema = {
        "keys": {
            "timeout": {"type": "int", "min": 1, "max": 100, "description": "Request timeout"},
            "retries": {"type": "int", "min": 0, "max": 10, "default": 3},
            "api_key": {"type": "str", "sensitive": True, "description": "Upstream key"},
        }
    }
    with server.http() as h:
        r = h.put(f"/api/v1/tenants/{tenant}/namespaces/_defaults/schema", json=schema)
        assert r.status_code == 200, r.text
        body = {
            "values": {"timeout": 10, "model": "small", "api_key": "s3cr3t-value"},
            "reason": "seed",
        }
        r = h.post(f"/api/v1/tenants/{tenant}/namespaces/ai-12", json=body)
        assert r.status_code == 200, r.text


def row(page: Any, key: str) -> Any:
    """The keys table's row of ``key``."""
    return page.locator(f'tr[data-key="{key}"]')


def open_namespace(page: Any, server: Server, tenant: str, ns: str = "ai-12") -> None:
    """Navigate through the sidebar: the tenant, then the namespace."""
    page.get_by_role("link", name=tenant, exact=True).first.click()
    page.get_by_role("heading", name=tenant, exact=True).wait_for()
    page.get_by_role("navigation", name="Tenants and namespaces").get_by_role(
        "link", name=ns, exact=True
    ).click()
    page.get_by_role("heading", name=ns, exact=True).wait_for()


# ------------------------------------------------------------------ browser tests


@browser_test
def test_sign_in_and_browse_to_a_key(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    page.goto(server.base + "/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    shot(page, server, "sign-in")
    page.get_by_label("Token").fill("kvc_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("This token was refused.")).to_be_visible()
    page.goto(server.base + "/")
    page.get_by_label("Token").focus()  # keyboard only: type the token, press Enter
    page.keyboard.type(server.admin)
    page.keyboard.press("Enter")
    expect(page.get_by_text("signed in as admin")).to_be_visible()
    page.locator("main section h1").first.wait_for()
    assert page.evaluate("sessionStorage.getItem('kvconf.token')") == server.admin
    assert page.evaluate("localStorage.length") == 0
    before = page.url
    page.get_by_role("link", name="Skip to content").focus()  # it keeps the page
    page.keyboard.press("Enter")
    assert page.url == before
    assert page.evaluate("document.activeElement.id") == "main"
    open_namespace(page, server, tenant)
    timeout = row(page, "timeout")
    expect(timeout).to_contain_text("10")
    expect(timeout).to_contain_text("namespace")
    expect(timeout).to_contain_text("v1")
    expect(timeout).to_contain_text("Request timeout")
    expect(timeout).to_contain_text("≤ 100")
    retries = row(page, "retries")  # only a schema default: its layer says so
    expect(retries).to_contain_text("schema default")
    expect(row(page, "api_key")).to_contain_text("s3cr3t-value")  # the admin has secrets
    expect(row(page, "api_key")).to_contain_text("sensitive")
    shot(page, server, "namespace")
    page.get_by_label("Search keys").fill("time")
    expect(row(page, "timeout")).to_be_visible()
    expect(row(page, "model")).to_have_count(0)
    page.get_by_label("Search keys").fill("")
    page.get_by_role("link", name="Tenants", exact=True).click()
    expect(page.get_by_role("row").filter(has_text=tenant)).to_contain_text("live")
    shot(page, server, "tenants")


@browser_test
def test_edit_two_keys_preview_and_publish(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    sign_in(page, server)
    open_namespace(page, server, tenant)
    dialog = page.get_by_role("dialog")

    def edit(key: str, value: str) -> None:
        row(page, key).get_by_role("button", name="Edit").click()
        dialog.get_by_label("Value").fill(value)
        dialog.get_by_role("button", name="Keep edit").click()

    edit("timeout", "500")
    edit("model", "12")
    page.get_by_role("button", name="Add key").click()
    dialog.get_by_label("Key").fill("retries")
    dialog.get_by_label("Value").fill('"many"')
    dialog.get_by_role("button", name="Add to changes").click()
    page.get_by_role("button", name="Preview").click()
    expect(dialog).to_contain_text("2 problems with the schema")  # every problem at once
    expect(dialog.get_by_role("listitem").filter(has_text="timeout")).to_be_visible()
    expect(dialog.get_by_role("listitem").filter(has_text="retries")).to_be_visible()
    expect(dialog.get_by_role("button", name="Publish")).to_be_disabled()
    dialog.get_by_role("button", name="Cancel").click()

    edit("timeout", "30")
    edit("retries", "5")
    page.get_by_role("button", name="Preview").click()
    changes = dialog.get_by_role("table", name="Changes")
    expect(changes.get_by_role("row").filter(has_text="timeout")).to_contain_text("10")
    expect(changes.get_by_role("row").filter(has_text="timeout")).to_contain_text("30")
    expect(changes.get_by_role("row").filter(has_text="model")).to_contain_text('"small"')
    expect(changes.get_by_role("row").filter(has_text="retries")).to_contain_text("added")
    shot(page, server, "preview")
    dialog.get_by_label("Reason").fill("tune the agent")
    dialog.get_by_role("button", name="Publish").click()
    expect(dialog).to_be_hidden()
    expect(row(page, "timeout")).to_contain_text("v2")
    expect(row(page, "timeout")).to_contain_text("30")
    expect(row(page, "model")).to_contain_text("v2")
    expect(row(page, "retries")).to_contain_text("v1")
    with server.http() as h:
        doc = h.get(f"/api/v1/tenants/{tenant}/namespaces/ai-12").json()
        assert doc["keys"]["timeout"]["value"] == 30
        assert doc["keys"]["model"]["value"] == 12
        assert doc["keys"]["retries"]["value"] == 5
        log = h.get(f"/api/v1/tenants/{tenant}/log").json()["events"]
        assert log[-1]["reason"] == "tune the agent"
        assert len(log[-1]["changes"]) == 3  # one change set, one revision

    row(page, "api_key").get_by_role("button", name="Delete").click()
    expect(row(page, "api_key")).to_contain_text("to be deleted")
    page.get_by_role("button", name="Preview").click()
    removed = dialog.get_by_role("table", name="Changes").get_by_role("row").nth(1)
    expect(removed).to_contain_text("removed")
    expect(removed).to_contain_text("deleted")
    dialog.get_by_role("button", name="Publish").click()
    expect(dialog).to_be_hidden()
    expect(row(page, "api_key")).to_have_count(0)
    with server.http() as h:
        r = h.get(f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/api_key")
        assert r.status_code == 404


@browser_test
def test_conflict_from_a_concurrent_write_and_rebase(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    sign_in(page, server)
    open_namespace(page, server, tenant)
    dialog = page.get_by_role("dialog")
    row(page, "timeout").get_by_role("button", name="Edit").click()
    dialog.get_by_label("Value").fill("42")
    # Someone else writes the key while the editor is open: the editor warns.
    with server.http() as h:
        r = h.put(f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/timeout", json={"value": 77})
        assert r.status_code == 200
    expect(dialog.get_by_text("changed underneath")).to_be_visible(timeout=3000)
    dialog.get_by_role("button", name="Keep edit").click()
    expect(row(page, "timeout")).to_contain_text("Changed underneath: now version 2")
    page.get_by_role("button", name="Preview").click()
    conflicts = dialog.get_by_role("table", name="Conflicts")
    expect(conflicts).to_contain_text("42")  # yours
    expect(conflicts).to_contain_text("77")  # the current value
    expect(conflicts).to_contain_text("based on version 1")
    expect(conflicts).to_contain_text("version 2 by admin")
    expect(dialog.get_by_role("button", name="Publish")).to_be_disabled()
    shot(page, server, "conflict")
    dialog.get_by_role("button", name="Rebase").click()
    expect(dialog.get_by_role("table", name="Conflicts")).to_have_count(0)
    expect(dialog.get_by_role("table", name="Changes")).to_contain_text("77")
    # A second concurrent write after the preview: Publish gets the 409.
    with server.http() as h:
        h.put(f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/timeout", json={"value": 78})
    dialog.get_by_role("button", name="Publish").click()
    expect(dialog.get_by_role("table", name="Conflicts")).to_contain_text("78")
    dialog.get_by_role("button", name="Rebase").click()
    expect(dialog.get_by_role("button", name="Publish")).to_be_enabled()
    dialog.get_by_role("button", name="Publish").click()
    expect(dialog).to_be_hidden()
    expect(row(page, "timeout")).to_contain_text("v4")
    with server.http() as h:
        entry = h.get(f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/timeout").json()
        assert (entry["value"], entry["version"]) == (42, 4)


@browser_test
def test_history_diff_and_rollbacks_with_previews(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    key = f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/timeout"
    with server.http() as h:
        h.put(key, json={"value": 20, "reason": "second"})
        h.put(key, json={"value": 30, "reason": "third"})
        before_rev = h.get(f"/api/v1/tenants/{tenant}").json()["revision"]
        h.put(f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/model", json={"value": "big"})
    sign_in(page, server)
    open_namespace(page, server, tenant)
    row(page, "timeout").get_by_role("link", name="History").click()
    versions = page.get_by_role("table", name="Versions of timeout")
    expect(versions.get_by_role("row")).to_have_count(4)  # header + 3 versions
    expect(versions).to_contain_text("third")
    expect(versions).to_contain_text("admin@127.0.0.1")
    page.get_by_label("From version", exact=True).select_option("1")
    page.get_by_label("To version", exact=True).select_option("3")
    diff = page.get_by_label("Changes from version 1 to version 3")
    expect(diff).to_contain_text("- 10")
    expect(diff).to_contain_text("+ 30")
    shot(page, server, "history")
    versions.get_by_role("row").filter(has_text="second").get_by_role(
        "button", name="Roll back"
    ).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Roll back timeout to version 2?")
    expect(dialog.get_by_label("Changes from now (v3) to after roll back")).to_contain_text("+ 20")
    dialog.get_by_label("Reason").fill("back to 20")
    dialog.get_by_role("button", name="Confirm roll back").click()
    expect(dialog).to_be_hidden()
    expect(versions.get_by_role("row")).to_have_count(5)
    with server.http() as h:
        entry = h.get(key).json()
        assert (entry["value"], entry["version"]) == (20, 4)

    # The namespace back to a revision, through time travel: preview, then confirm.
    page.get_by_role("link", name="Time travel", exact=True).first.click()
    page.get_by_label("Revision", exact=True).fill(str(before_rev))
    page.get_by_label("Scope").select_option("ai-12")
    page.get_by_role("button", name="Show").click()
    state = page.get_by_role("table", name=f"State at revision {before_rev}")
    expect(state.get_by_role("row").filter(has_text="timeout")).to_contain_text("30")
    expect(state.get_by_role("row").filter(has_text="model")).to_contain_text('"small"')
    preview = page.get_by_role("table", name="Roll back preview")
    expect(preview.get_by_role("row").filter(has_text="model")).to_contain_text('"big"')
    shot(page, server, "time-travel")
    with server.http() as h:  # previewing wrote nothing
        assert (
            h.get(f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/model").json()["value"] == "big"
        )
    page.get_by_role("button", name="Roll back").click()
    expect(dialog.get_by_role("table", name="Roll back preview")).to_contain_text("timeout")
    dialog.get_by_label("Reason").fill("undo today")
    dialog.get_by_role("button", name="Confirm roll back").click()
    expect(dialog).to_be_hidden()
    with server.http() as h:
        doc = h.get(f"/api/v1/tenants/{tenant}/namespaces/ai-12").json()["keys"]
        assert doc["timeout"]["value"] == 30
        assert doc["model"]["value"] == "small"

    # The whole tenant back to just after the seed (revision 2: the schema was 1).
    page.get_by_label("Revision", exact=True).fill("2")
    page.get_by_label("Scope").select_option("")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="as of revision 2")).to_be_visible()
    expect(preview.get_by_role("row").filter(has_text="timeout")).to_contain_text("10")
    page.get_by_role("button", name=f"Roll back tenant {tenant}").click()
    dialog.get_by_role("button", name="Confirm roll back").click()
    expect(dialog).to_be_hidden()
    with server.http() as h:
        assert h.get(key).json()["value"] == 10
    page.get_by_role("link", name="Change log").click()
    log = page.get_by_role("table", name="Change log")
    expect(log.get_by_role("row").nth(2)).to_contain_text("undo today")
    shot(page, server, "change-log")


@browser_test
def test_a_change_made_through_rest_appears_live(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    sign_in(page, server)
    open_namespace(page, server, tenant)
    expect(page.locator("#live")).to_contain_text("Live")
    page.wait_for_timeout(300)  # the stream is connected
    with server.http() as h:
        body = {"values": {"model": "live-value", "fresh": True}, "reason": "elsewhere"}
        assert h.post(f"/api/v1/tenants/{tenant}/namespaces/ai-12", json=body).status_code == 200
    started = time.monotonic()
    expect(row(page, "model")).to_contain_text("live-value", timeout=2000)
    expect(row(page, "fresh")).to_contain_text("true", timeout=2000)
    assert time.monotonic() - started < 2.0
    expect(row(page, "model")).to_contain_text("v2")
    # A namespace created elsewhere shows up in the sidebar too.
    with server.http() as h:
        h.put(f"/api/v1/tenants/{tenant}/namespaces/ai-13/keys/k", json={"value": 1})
    nav = page.get_by_role("navigation", name="Tenants and namespaces")
    expect(nav.get_by_role("link", name="ai-13", exact=True)).to_be_visible(timeout=2000)


@browser_test
def test_masked_secrets_and_disabled_buttons_for_a_read_token(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    reader = server.token(f"reader-{tenant}", {tenant: ["read"]})
    sign_in(page, server, reader)
    open_namespace(page, server, tenant)
    api_key = row(page, "api_key")
    expect(api_key).to_contain_text("***")
    expect(api_key).not_to_contain_text("s3cr3t")
    edit = row(page, "timeout").get_by_role("button", name="Edit")
    expect(edit).to_be_disabled()
    expect(edit).to_have_attribute("title", f"Needs the write right on {tenant}/ai-12")
    described = edit.get_attribute("aria-describedby")
    assert described
    expect(page.locator(f"#{described}")).to_have_text(f"Needs the write right on {tenant}/ai-12")
    expect(page.get_by_role("button", name="Add key")).to_be_disabled()
    edit.focus()  # still reachable by keyboard, with its reason
    assert page.evaluate("document.activeElement.textContent") == "Edit"
    shot(page, server, "masked")
    assert "s3cr3t" not in page.content()


@browser_test
def test_a_token_on_one_tenant_sees_only_that_tenant(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    mine = f"ui-{uuid.uuid4().hex[:8]}"
    other = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, mine)
    seed(server, other)
    token = server.token(f"one-{mine}", {mine: ["write"]})
    sign_in(page, server, token)
    nav = page.get_by_role("navigation", name="Tenants and namespaces")
    expect(nav.get_by_role("link", name=mine, exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name=other, exact=True)).to_have_count(0)
    expect(nav.get_by_role("link", name="Tokens")).to_have_count(0)  # not an admin
    page.goto(f"{server.base}/ui/#/t/{other}/ns/ai-12")
    expect(page.get_by_text("Cannot show this page")).to_be_visible()
    assert "s3cr3t" not in page.content()


@browser_test
def test_a_namespace_scoped_token_sees_only_its_namespace(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    with server.http() as h:
        r = h.post(f"/api/v1/tenants/{tenant}/namespaces/ai-99", json={"values": {"x": 1}})
        assert r.status_code == 200, r.text
    token = server.token(f"ns-{tenant}", {f"{tenant}/ai-12": ["write"]})
    sign_in(page, server, token)
    page.goto(f"{server.base}/ui/#/t/{tenant}/ns/ai-12")
    page.locator("main section h1").first.wait_for()
    nav = page.get_by_role("navigation", name="Tenants and namespaces")
    sub = nav.get_by_role("list", name=f"{tenant} namespaces")
    expect(sub.get_by_role("link", name="ai-12", exact=True)).to_be_visible()
    expect(sub.get_by_role("link", name="ai-99", exact=True)).to_have_count(0)
    expect(row(page, "timeout").get_by_role("button", name="Edit")).to_be_enabled()
    shot(page, server, "namespace-scoped-token")
    page.goto(f"{server.base}/ui/#/t/{tenant}/ns/ai-99")
    expect(page.get_by_text("Cannot show this page")).to_be_visible()


@browser_test
def test_soft_deleted_tenants_are_listed_and_marked(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    gone = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, gone)
    with server.http() as h:
        assert h.delete(f"/api/v1/tenants/{gone}").status_code == 200  # soft
    sign_in(page, server)
    nav = page.get_by_role("navigation", name="Tenants and namespaces")
    link = nav.get_by_role("link", name=gone, exact=True)
    expect(link).to_be_visible()
    expect(link.locator(".badge")).to_have_text("deleted")
    assert "soft-deleted" in (link.get_attribute("title") or "")


@browser_test
def test_snapshot_save_verify_and_restore_with_a_dry_run(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    sign_in(page, server)
    page.goto(f"{server.base}/ui/#/t/{tenant}/snapshots")
    page.get_by_label("Label").fill("before-change")
    page.get_by_role("button", name="Save snapshot").click()
    snapshots = page.get_by_role("table", name="Snapshots")
    expect(snapshots).to_contain_text("before-change")
    snapshots.get_by_role("button", name="Verify").first.click()
    expect(page.get_by_text("checksum and contents verified")).to_be_visible()
    key = f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/timeout"
    with server.http() as h:
        h.put(key, json={"value": 99})
        h.put(f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/extra", json={"value": 1})
        rev = h.get(f"/api/v1/tenants/{tenant}").json()["revision"]
    snapshots.get_by_role("button", name="Restore").first.click()
    dialog = page.get_by_role("dialog")
    counts = dialog.get_by_label("Restore dry run")
    expect(counts).to_be_visible()
    expect(dialog).to_contain_text("nothing written yet")
    assert counts.inner_text().split() == [
        "Added", "0", "Changed", "1", "Removed", "1", "Unchanged", "2",
    ]  # fmt: skip
    shot(page, server, "restore-dry-run")
    with server.http() as h:  # the dry run wrote nothing
        assert h.get(f"/api/v1/tenants/{tenant}").json()["revision"] == rev
        assert h.get(key).json()["value"] == 99
    dialog.get_by_role("button", name="Confirm restore").click()
    expect(dialog).to_be_hidden()
    with server.http() as h:
        assert h.get(key).json()["value"] == 10
        assert h.get(f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/extra").status_code == 404


@browser_test
def test_tokens_created_shown_once_and_revoked(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    sign_in(page, server)
    page.get_by_role("link", name="Tokens").click()
    name = f"ci-{tenant}"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Scope", exact=True).fill(f"{tenant}/ai-12")  # one namespace
    page.get_by_role("checkbox", name="write").check()
    page.get_by_label("Expires in (hours)").fill("2")
    page.get_by_role("button", name="Create token").click()
    dialog = page.get_by_role("dialog")
    text = dialog.get_by_label("Token text").input_value()
    assert text.startswith("kvc_")
    with server.http(text) as h:
        me = h.get("/api/v1/tokens/me").json()
        assert me["grants"] == {f"{tenant}/ai-12": ["read", "write"]}
        assert me["expires_at"] is not None
    dialog.get_by_role("button", name="Done").click()
    assert text not in page.content()  # shown once
    row = page.get_by_role("row").filter(has_text=name)
    expect(row.locator("td[data-label=Expires]")).not_to_have_text("never")
    shot(page, server, "tokens")
    page.get_by_role("row").filter(has_text=name).get_by_role("button", name="Revoke").click()
    dialog.get_by_role("button", name="Confirm revoke").click()
    expect(page.get_by_role("row").filter(has_text=name)).to_have_count(0)
    with server.http(text) as h:
        assert h.get("/api/v1/tokens/me").status_code == 401


@browser_test
def test_fleet_page_and_phone_layout(phone: Any, server: Server) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    sign_in(phone, server)
    menu = phone.get_by_role("button", name="Menu")
    expect(menu).to_be_visible()
    menu.click()
    nav = phone.get_by_role("navigation", name="Tenants and namespaces")
    nav.get_by_role("link", name=tenant, exact=True).click()
    phone.get_by_role("heading", name=tenant, exact=True).wait_for()
    expect(menu).to_have_attribute("aria-expanded", "false")  # navigating closes the menu
    menu.click()
    nav.get_by_role("link", name="ai-12", exact=True).click()
    expect(row(phone, "timeout")).to_contain_text("Request timeout")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the namespace page scrolls sideways on a phone"
    shot(phone, server, "phone-namespace")
    row(phone, "timeout").get_by_role("button", name="Edit").click()
    dialog = phone.get_by_role("dialog")
    dialog.get_by_label("Value").fill("20")
    dialog.get_by_role("button", name="Keep edit").click()
    phone.get_by_role("button", name="Preview").click()
    expect(dialog.get_by_role("table", name="Changes")).to_contain_text("20")
    shot(phone, server, "phone-preview")
    dialog.get_by_role("button", name="Cancel").click()
    phone.goto(f"{server.base}/ui/#/t/{tenant}/fleet")
    expect(phone.get_by_role("heading", name=f"Fleet of {tenant}")).to_be_visible()
    expect(phone.get_by_text("No watcher reported")).to_be_visible()


@browser_test
def test_fleet_shows_watchers_and_how_far_behind(
    page: Any, server: Server, request: pytest.FixtureRequest
) -> None:
    """A real HTTP watcher of the tenant (reported by the server) is in step; on
    the real-Redis backend a report written into Redis adds one that is behind."""
    from playwright.sync_api import expect

    from kvconf import SyncWatcher
    from kvconf._watch.fleet import FleetMember, encode_member
    from kvconf.store import tenant_keys

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    seed(server, tenant)
    with server.http() as h:
        h.put(f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/timeout", json={"value": 11})
        h.put(f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/timeout", json={"value": 12})
        rev = h.get(f"/api/v1/tenants/{tenant}").json()["revision"]
    with SyncWatcher(tenant, server.base, token=server.admin, instance_id="web-1:100:aa",
                     environ={}) as watcher:  # fmt: skip
        assert watcher.revision == rev
        if server.backend == "redis":
            now = time.time()
            behind = FleetMember(
                "web-2:200:bb", "web-2", 200, rev - 2, "e", True, now, now - 60, ["ai-12"]
            )
            shared: RedisServer = request.getfixturevalue("shared_redis")
            direct = redis.Redis.from_url(shared.url)
            try:
                direct.hset(tenant_keys(tenant).fleet, behind.instance, encode_member(behind))
            finally:
                direct.close()
        sign_in(page, server)
        page.goto(f"{server.base}/ui/#/t/{tenant}/fleet")
        watchers = page.get_by_role("table", name="Watchers")
        expect(watchers.get_by_role("row").filter(has_text="web-1")).to_contain_text("in step")
        if server.backend == "redis":
            row = watchers.get_by_role("row").filter(has_text="web-2")
            expect(row).to_contain_text("2 revisions")
            expect(row).to_contain_text("stale")
            expect(row).to_have_class(re.compile("row-warn"))
        shot(page, server, "fleet")


@browser_test
def test_open_mode_signs_in_without_a_token(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    with serving(tmp_path / "data", None, None) as base:
        with httpx.Client(base_url=base) as h:
            r = h.put(f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k", json={"value": 1})
            assert r.status_code == 201
        with browsing(browser, base) as page:
            page.goto(base + "/")
            expect(page.get_by_text("open mode (no token)")).to_be_visible()
            nav = page.get_by_role("navigation", name="Tenants and namespaces")
            expect(nav.get_by_role("link", name=tenant, exact=True)).to_be_visible()
            expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
            assert page.evaluate("sessionStorage.length") == 0
