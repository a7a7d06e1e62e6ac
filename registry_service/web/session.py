"""Signing in to the web UI: the API token kept in an HttpOnly cookie, checked exactly as the API
checks a bearer token (:func:`registry_service.domain.auth.tokens.resolve`).

The cookie never authenticates the JSON API (that reads the ``Authorization`` header only), so a
page on another site cannot make a browser publish or move aliases with it.
"""

from __future__ import annotations

from litestar import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.auth.tokens import ANONYMOUS, Principal, resolve
from ..errors import Unauthorized

COOKIE = "registry_token"
#: Set on ``request.state`` when the cookie held a token that no longer works (it is then cleared).
STALE_FLAG = "web_stale_cookie"


async def check_token(db: AsyncSession, token: str) -> Principal:
    """The principal of ``token``; :class:`Unauthorized` when it is unknown, revoked or expired."""
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise Unauthorized("paste the token exactly as it was issued (one word, no spaces)")
    return await resolve(db, f"Bearer {token}")


async def provide_viewer(request: Request, db: AsyncSession) -> Principal:
    """The signed-in principal of a page request (anonymous without a cookie or with a stale one)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return ANONYMOUS
    try:
        principal = await check_token(db, token)
    except Unauthorized:
        request.state[STALE_FLAG] = True
        principal = ANONYMOUS
    await db.rollback()  # end the read-only transaction before the handler's own queries
    return principal


def set_token_cookie(response: Response, request: Request, token: str) -> None:
    """Keep ``token`` in an HttpOnly, SameSite=Lax cookie (Secure when served over https)."""
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="lax", path="/",
                        secure=request.url.scheme == "https", max_age=30 * 24 * 3600)


def clear_token_cookie(response: Response) -> None:
    """Forget the token."""
    response.delete_cookie(COOKIE, path="/")


def stale_cookie(request: Request) -> bool:
    """Whether this request's cookie held a token that no longer works (the page then clears it)."""
    return bool(request.state.get(STALE_FLAG))
