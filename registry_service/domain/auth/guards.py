"""Route guards: the caller is known, and allowed to write, before a request body is read.

Litestar runs guards before it reads a body (a ``data`` parameter, ``request.form()``), so an
anonymous or foreign upload is refused with 401/403 without a byte of it being received. The
caller found here is kept on the request, and the ``principal`` dependency answers with it.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ...errors import Unauthorized
from .tokens import ANONYMOUS, Principal, bearer_digest, principal_for

#: Where the caller is kept on ``request.state`` once it is known.
PRINCIPAL_STATE = "principal"


async def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller of ``connection`` from its bearer token, resolved once per request and kept on the
    request. A token is read on the reader engine, only when its lookup is not cached, and once for
    all the requests that miss it at once (:mod:`.token_cache`)."""
    state = connection.scope.setdefault("state", {})
    known = state.get(PRINCIPAL_STATE)
    if isinstance(known, Principal):
        return known
    digest = bearer_digest(connection.headers.get("authorization"))
    principal = ANONYMOUS if digest is None else await principal_for(connection.app.state.reader, digest)
    state[PRINCIPAL_STATE] = principal
    return principal


async def writer(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: the caller may write to the namespace ``{ns}`` of the path (401 anonymous, 403 another's)."""
    (await principal_of(connection)).require_write(str(connection.path_params["ns"]))


async def signed_in(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: the caller has a valid token (routes whose namespace is in the body check it after)."""
    if not (await principal_of(connection)).authenticated:
        raise Unauthorized()


__all__ = ["PRINCIPAL_STATE", "principal_of", "signed_in", "writer"]
