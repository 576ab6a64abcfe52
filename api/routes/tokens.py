"""API tokens: create (shown once), list, inspect, revoke."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from kvconf.exceptions import Conflict

from ..auth import Authenticator, TokenRecord, parse_scope
from ..deps import PrincipalDep
from ..errors import Forbidden
from ..models import (
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenRevoked,
    WhoAmI,
    body_doc,
    decode,
    respond,
    response_doc,
)
from ..query import refuse_unknown_query

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1/tokens", tags=["tokens"], dependencies=[Depends(refuse_unknown_query)]
)
TokenName = Annotated[str, PathParam(description="Token name.")]


def _auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def _visible(principal: PrincipalDep, record: TokenRecord) -> bool:
    return principal.is_admin or all(
        t != "*" and principal.covers(t, "admin") for t in record.grants
    )


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@router.get(
    "/me",
    summary="The caller's own identity and rights",
    operation_id="whoAmI",
    responses=response_doc(WhoAmI),
)
async def whoami(principal: PrincipalDep) -> Response:
    """Name, grants, and whether the API runs open."""
    grants = {t: sorted(r) for t, r in principal.all_grants.items()}
    return respond({
        "name": principal.name, "grants": grants, "open": principal.open,
        "expires_at": _iso(principal.expires),
    })  # fmt: skip


@router.post(
    "",
    status_code=201,
    summary="Create a token",
    openapi_extra=body_doc(TokenCreate),
    operation_id="createToken",
    responses=response_doc(TokenCreated, 201),
)
async def create_token(request: Request, principal: PrincipalDep) -> Response:
    """The token text is in the response only; only its SHA-256 is stored.

    A caller may only grant rights it holds (admin on each tenant or
    namespace scope named; a global admin for ``*``), and a token made by an
    expiring token expires no later than it.
    """
    body: TokenCreate = decode(await request.body(), TokenCreate)
    for scope in body.grants:
        parse_scope(scope)  # a malformed scope is a 422 before any right is weighed
    principal.require_grants(body.grants)
    expires = None if body.expires_in is None else time.time() + body.expires_in
    if principal.expires is not None:
        expires = principal.expires if expires is None else min(expires, principal.expires)
    token, record = await _auth(request).create(
        body.name, body.grants, by=principal.name,
        expires_at=None if expires is None else datetime.fromtimestamp(expires, UTC),
    )  # fmt: skip
    return respond(
        {"name": body.name, "token": token, "grants": body.grants,
         "expires_at": record.expires_at},
        status=201,
    )  # fmt: skip


@router.get(
    "",
    summary="List tokens (never their text)",
    operation_id="listTokens",
    responses=response_doc(TokenList),
)
async def list_tokens(request: Request, principal: PrincipalDep) -> Response:
    """A global admin sees all; a tenant admin the tokens confined to its tenants."""
    records = [r for r in await _auth(request).list() if _visible(principal, r)]
    return respond({"tokens": records})


@router.delete(
    "/{name}",
    summary="Revoke a token",
    operation_id="revokeToken",
    responses=response_doc(TokenRevoked),
)
async def revoke_token(name: TokenName, request: Request, principal: PrincipalDep) -> Response:
    """Effective at once here, within 2 s on other server processes."""
    auth = _auth(request)
    record = await auth.get(name)
    if not _visible(principal, record):
        raise Forbidden(f"revoking {name!r} needs admin on every tenant it grants")
    if auth.admin_token is None and await auth.count() <= 1:
        raise Conflict(
            f"{name!r} is the last token and no admin token is configured: revoking it "
            "would lock everyone out (set KVCONF_ADMIN_TOKEN, or create another token first)"
        )
    await auth.revoke(name)
    return respond({"name": name, "revoked": True})
