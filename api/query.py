"""Query parameters of routes that change data: an unknown one is refused, never ignored.

A misspelt ``?dryrun=true`` on a write must not commit the write; this
dependency, applied to every route, answers 422 naming the parameters a
mutating route does not declare.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from kvconf.exceptions import InvalidInput

__all__ = ["refuse_unknown_query"]

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_declared: dict[int, frozenset[str]] = {}


def _declared_query(route: APIRoute) -> frozenset[str]:
    found = _declared.get(id(route))
    if found is None:
        found = _declared[id(route)] = frozenset(_query_names(route.dependant))
    return found


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters of a route and of every dependency it has."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def refuse_unknown_query(request: Request) -> None:
    """422 for query parameters a mutating route does not declare."""
    if request.method in _READS or not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params) - _declared_query(route))
    if unknown:
        raise InvalidInput(
            f"unknown query parameter(s) on {request.method}: {', '.join(unknown)}",
            field="query",
            unknown=unknown,
        )
