"""Property-based fuzz of the OpenAPI schema with schemathesis: no input gives a 5xx.

Every answer must also be documented: its status listed for the operation,
and a JSON body that fits the documented schema (error bodies included).

Cases are generated from the app's own OpenAPI document (valid and invalid
ones) and sent in-process through httpx's ASGI transport with the admin
token, on a fresh embedded store. The watch stream is left out (it does not
end on its own); its parameters are covered in ``test_api_history.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from .api_helpers import ADMIN, running_app
from .openapi_helpers import conformance


def _request(case: Any) -> dict[str, Any]:
    kwargs = case.as_transport_kwargs(base_url="http://kvconf")
    headers = {k: v for k, v in kwargs.get("headers", {}).items() if k.lower() != "authorization"}
    headers["Authorization"] = f"Bearer {ADMIN}"
    out: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": headers,
        "params": kwargs.get("params") or None,
    }
    if "json" in kwargs:
        out["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        out["content"] = kwargs["data"]
    return out


SEEDED = {"tenant": "fz", "namespace": "svc", "key": "k", "ai_id": 7}


def _strategy(op: Any, mode: GenerationMode, seeded: bool) -> Any:
    if not seeded:
        return op.as_strategy(generation_mode=mode)
    names = {p.name for p in op.path_parameters}
    fixed = {k: v for k, v in SEEDED.items() if k in names}
    return op.as_strategy(generation_mode=mode, path_parameters=fixed)


@pytest.mark.parametrize(
    ("mode", "seeded"),
    [
        (GenerationMode.POSITIVE, False),
        (GenerationMode.NEGATIVE, False),
        (GenerationMode.POSITIVE, True),
    ],
)
def test_no_input_gives_a_5xx(mode: GenerationMode, seeded: bool) -> None:
    loop = asyncio.new_event_loop()
    app_cm = running_app(f"memory://fuzz-{uuid.uuid4().hex}", admin_token=ADMIN)
    try:
        app = loop.run_until_complete(app_cm.__aenter__())
        schema = schemathesis.openapi.from_dict(app.openapi())
        operations = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
        operations = [op for op in operations if not op.path.endswith("/watch")]
        assert len(operations) > 30
        strategy = st.one_of([_strategy(op, mode, seeded) for op in operations])
        transport = httpx.ASGITransport(app)
        http = httpx.AsyncClient(transport=transport, base_url="http://kvconf")
        if seeded:  # a tenant with a schema, values and history for cases to hit
            seed = {"Authorization": f"Bearer {ADMIN}"}
            base = "/api/v1/tenants/fz/namespaces/svc"
            for body in ({"values": {"k": 1, "s": "x"}}, {"values": {"k": 2}}):
                loop.run_until_complete(http.post(base, json=body, headers=seed))
            schema_doc = {"keys": {"s": {"type": "str", "sensitive": True}}}
            loop.run_until_complete(http.put(f"{base}/schema", json=schema_doc, headers=seed))
        failures: list[str] = []
        undocumented: list[str] = []
        spec = app.openapi()

        @settings(
            max_examples=120,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case: Any) -> None:
            request = _request(case)
            response = loop.run_until_complete(http.request(**request))
            if response.status_code >= 500:
                failures.append(f"{request['method']} {request['url']}: {response.text[:200]}")
            assert response.status_code < 500, failures[-1]
            undocumented.extend(conformance(spec, case.method, case.operation.path, response))

        try:
            check()
            assert not undocumented, sorted(set(undocumented))[:10]
        finally:
            loop.run_until_complete(http.aclose())
    finally:
        loop.run_until_complete(app_cm.__aexit__(None, None, None))
        loop.close()
