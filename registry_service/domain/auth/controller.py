"""HTTP routes for tokens: create, list and revoke them, and ask who the current token is.

Who may do what: a global admin, with every token; a namespace admin (a token of that namespace
with the ``admin`` scope), with the tokens of its namespace; every token may see and revoke itself.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, post
from sqlalchemy import ColumnElement, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import ApiToken
from ...errors import BadRequest, Forbidden, NotFound, Unauthorized
from ...names import PART_PATTERN, check_part
from ...openapi import problems
from ...params import Page
from ...settings import Settings
from .guards import signed_in
from .schemas import TokenCreated, TokenInfo, TokenPage, TokenRevoked, WhoAmI
from .sessions import end_sessions_of
from .tokens import Principal, issue_token, token_lifetime

#: Longest lifetime ``expires_in_days`` can ask for (the configured maximum applies too).
MAX_TOKEN_DAYS = 3650
#: Longest lifetime ``expires_in`` can ask for, in seconds (a hundred years; the configured maximum applies too).
MAX_TOKEN_SECONDS = 100 * 365 * 86400
#: Tokens a page of ``GET /api/v1/tokens`` lists.
TOKEN_PAGE = 100


class NewToken(msgspec.Struct):
    """A token for ``namespace`` (omit for a global admin token) with these scopes, living ``expires_in``
    seconds (omitted: the configured default; 0: never, where no maximum is configured)."""

    namespace: Annotated[str, msgspec.Meta(pattern=PART_PATTERN, max_length=96)] | None = None
    scopes: list[Literal["read", "write", "admin"]] = msgspec.field(default_factory=lambda: ["read"])
    name: Annotated[str, msgspec.Meta(max_length=128)] = ""
    expires_in: Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKEN_SECONDS)] | None = None
    #: The older form of ``expires_in``, in days.
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKEN_DAYS)] | None = None


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


def describe_token(row: ApiToken, principal: Principal) -> TokenInfo:
    """The JSON form of a token (never its secret)."""
    now = dt.datetime.now(dt.UTC)
    expired = row.expires_at is not None and row.expires_at <= now
    return {"id": row.id, "name": row.name, "namespace": row.namespace, "scopes": sorted(row.scopes),
            "created_at": _iso(row.created_at), "expires_at": _iso(row.expires_at), "revoked": row.revoked,
            "active": not row.revoked and not expired, "current": row.id == principal.token_id}


def manageable(principal: Principal) -> ColumnElement[bool]:
    """SQL condition: tokens the caller may list and revoke."""
    if principal.is_admin:
        return true()
    own = ApiToken.id == principal.token_id if principal.token_id is not None else false()
    if principal.namespace and "admin" in principal.scopes:
        return or_(own, ApiToken.namespace == principal.namespace)
    return own


class TokenController(Controller):
    """``/api/v1/tokens`` and ``/api/v1/whoami``"""

    path = "/api/v1"
    tags = ["auth"]

    @post("/tokens", guards=[signed_in], responses=problems(400, 401, 403, 413))
    async def create(self, data: NewToken, db: AsyncSession, principal: Principal, settings: Settings
                     ) -> TokenCreated:
        """Create a token; global admins for any namespace, namespace admins for their own. It expires after
        ``expires_in`` seconds (default and maximum: the token_default_ttl_s and token_max_ttl_s settings)."""
        if not principal.authenticated:
            raise Unauthorized()
        if data.namespace is not None:
            check_part(data.namespace, "namespace")
        allowed = principal.is_admin or (data.namespace is not None and principal.can_admin(data.namespace))
        if not allowed:
            raise Forbidden("only an admin token can create tokens (for its namespace, or any if global)")
        if data.expires_in is not None and data.expires_in_days is not None:
            raise BadRequest("give expires_in (seconds) or expires_in_days, not both")
        requested = data.expires_in if data.expires_in_days is None else data.expires_in_days * 86400
        lifetime = token_lifetime(requested, default_s=settings.token_default_ttl_s, max_s=settings.token_max_ttl_s)
        token, row = await issue_token(db, namespace=data.namespace, scopes=data.scopes, name=data.name,
                                       expires_in=lifetime)
        await db.commit()
        return {"token": token, "id": row.id, "namespace": data.namespace, "scopes": sorted(set(data.scopes)),
                "name": data.name, "expires_at": _iso(row.expires_at)}

    @get("/tokens", guards=[signed_in], responses=problems(401))
    async def list_tokens(self, db: AsyncSession, principal: Principal, namespace: str | None = None,
                          include_revoked: bool = False, page: Page = 1) -> TokenPage:
        """Tokens the caller may manage, newest first: its own; a namespace admin's, every token of its namespace;
        a global admin's, all (``namespace`` narrows it). Secrets are never shown."""
        stmt = select(ApiToken).where(manageable(principal))
        if namespace:
            check_part(namespace, "namespace")
            stmt = stmt.where(ApiToken.namespace == namespace)
        if not include_revoked:
            stmt = stmt.where(ApiToken.revoked.is_(False))
        total = (await db.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = (await db.execute(stmt.order_by(ApiToken.id.desc()).limit(TOKEN_PAGE)
                                 .offset((max(page, 1) - 1) * TOKEN_PAGE))).scalars()
        return {"items": [describe_token(r, principal) for r in rows], "total": total, "page": page}

    @delete("/tokens/{token_id:int}", status_code=200, guards=[signed_in], responses=problems(401, 404))
    async def revoke(self, token_id: int, db: AsyncSession, principal: Principal) -> TokenRevoked:
        """Revoke a token (itself, or one the caller manages): every API process and worker refuses it from the
        next request on, and the web sessions signed in with it end."""
        row = (await db.execute(select(ApiToken).where(ApiToken.id == token_id, manageable(principal))
                                .with_for_update())).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no token {token_id} that this token may manage")
        row.revoked = True
        await end_sessions_of(db, token_id)
        await db.commit()
        return {"id": token_id, "revoked": True}

    @get("/whoami", responses=problems(401))
    async def whoami(self, principal: Principal, db: AsyncSession) -> WhoAmI:
        """The current token's namespace, scopes and expiry."""
        expires = None
        if principal.token_id is not None:
            expires = await db.scalar(select(ApiToken.expires_at).where(ApiToken.id == principal.token_id))
        return {"authenticated": principal.authenticated, "id": principal.token_id, "name": principal.name,
                "namespace": principal.namespace, "scopes": sorted(principal.scopes), "admin": principal.is_admin,
                "expires_at": _iso(expires)}
