"""Checking responses against the app's own OpenAPI document."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema


def documented(spec: dict[str, Any], method: str, template: str) -> dict[str, Any]:
    """The documented responses of one operation."""
    responses: dict[str, Any] = spec["paths"][template][method.lower()]["responses"]
    return responses


def schema_errors(spec: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    """Why ``instance`` does not fit ``schema`` (refs resolved in ``spec``); empty if it fits."""
    root = {**schema, "components": spec["components"]}
    validator = jsonschema.Draft202012Validator(root)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def conformance(
    spec: dict[str, Any], method: str, template: str, response: httpx.Response
) -> list[str]:
    """Problems of ``response``: an undocumented status, or a JSON body off its schema."""
    responses = documented(spec, method, template)
    status = str(response.status_code)
    entry = responses.get(status) or responses.get(f"{status[0]}XX")
    if entry is None:
        return [f"{method} {template}: status {status} is not documented"]
    content = entry.get("content", {})
    kind = response.headers.get("content-type", "").split(";")[0]
    if kind not in content:
        return [f"{method} {template}: {status} {kind} is not documented ({sorted(content)})"]
    if kind != "application/json":
        return []
    problems = schema_errors(spec, content[kind]["schema"], response.json())
    return [f"{method} {template} {status}: {p}" for p in problems[:3]]
