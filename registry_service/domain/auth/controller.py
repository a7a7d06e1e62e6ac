"""HTTP routes for tokens: create one, and ask who the current token is."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from litestar import Controller, get, post
from sqlalchemy.ext.asyncio import AsyncSession

from ...errors import Forbidden, Unauthorized
from ...names import PART_PATTERN, check_part
from ...openapi import problems
from .guards import signed_in
from .schemas import TokenCreated, WhoAmI
from .tokens import Principal, create_token

#: Longest lifetime a token can be given (ten years); omit ``expires_in_days`` for a token that never expires.
MAX_TOKEN_DAYS = 3650


class NewToken(msgspec.Struct):
    """A token for ``namespace`` (omit for a global admin token) with these scopes."""

    namespace: Annotated[str, msgspec.Meta(pattern=PART_PATTERN, max_length=96)] | None = None
    scopes: list[Literal["read", "write", "admin"]] = msgspec.field(default_factory=lambda: ["read"])
    name: Annotated[str, msgspec.Meta(max_length=128)] = ""
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKEN_DAYS)] | None = None


class TokenController(Controller):
    """``/api/v1/tokens`` and ``/api/v1/whoami``"""

    path = "/api/v1"
    tags = ["auth"]

    @post("/tokens", guards=[signed_in], responses=problems(401, 403, 413))
    async def create(self, data: NewToken, db: AsyncSession, principal: Principal) -> TokenCreated:
        """Create a token; global admins for any namespace, namespace admins for their own."""
        if not principal.authenticated:
            raise Unauthorized()
        if data.namespace is not None:
            check_part(data.namespace, "namespace")
        allowed = principal.is_admin or (
            data.namespace is not None and principal.namespace == data.namespace and "admin" in principal.scopes
        )
        if not allowed:
            raise Forbidden("only an admin token can create tokens (for its namespace, or any if global)")
        expires = dt.timedelta(days=data.expires_in_days) if data.expires_in_days else None
        token = await create_token(db, namespace=data.namespace, scopes=data.scopes, name=data.name,
                                   expires_in=expires)
        await db.commit()
        return {"token": token, "namespace": data.namespace, "scopes": sorted(set(data.scopes)), "name": data.name}

    @get("/whoami", responses=problems(401))
    async def whoami(self, principal: Principal) -> WhoAmI:
        """The current token's namespace and scopes."""
        return {"authenticated": principal.authenticated, "name": principal.name, "namespace": principal.namespace,
                "scopes": sorted(principal.scopes), "admin": principal.is_admin}
