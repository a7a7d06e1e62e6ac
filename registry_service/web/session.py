"""Signing in to the web UI: the API token is checked exactly as the API checks a bearer token
(:func:`registry_service.domain.auth.tokens.resolve`), then a server-side session is opened
(:mod:`registry_service.domain.auth.sessions`) and only its random id goes into an HttpOnly,
SameSite=Lax cookie, ``Secure`` when the service is reached over https (the public URL says so, or
the request came over https; behind a TLS-terminating proxy that is X-Forwarded-Proto, which uvicorn
honours only from the proxies in ``FORWARDED_ALLOW_IPS``).

The cookie never authenticates the JSON API (that reads the ``Authorization`` header only), so a
page on another site cannot make a browser publish or move aliases with it; the pages' own forms
carry a CSRF token (:func:`csrf_config`).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

from litestar import Request, Response
from litestar.config.csrf import CSRFConfig
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.auth.sessions import end_session, session_principal, start_session
from ..domain.auth.tokens import ANONYMOUS, Principal, resolve
from ..errors import Unauthorized
from ..settings import Settings

COOKIE = "registry_session"
#: Set on ``request.state`` when the cookie held a session that has ended (it is then cleared).
STALE_FLAG = "web_stale_cookie"
#: Where the CSRF secret is kept when ``SECRET_KEY`` is not set (one per data directory).
SECRET_FILE = "secret-key"


async def check_token(db: AsyncSession, token: str) -> Principal:
    """The principal of ``token``; :class:`Unauthorized` when it is unknown, revoked or expired."""
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise Unauthorized("paste the token exactly as it was issued (one word, no spaces)")
    return await resolve(db, f"Bearer {token}")


async def provide_viewer(request: Request, db: AsyncSession) -> Principal:
    """The signed-in principal of a page request (anonymous without a cookie or with an ended session)."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return ANONYMOUS
    try:
        principal = await session_principal(db, session_id)
    except Unauthorized:
        request.state[STALE_FLAG] = True
        principal = ANONYMOUS
    await db.rollback()  # end the read-only transaction before the handler's own queries
    return principal


def secure_cookies(request: Request, settings: Settings) -> bool:
    """Whether cookies get ``Secure``: the public URL is https, or this request came over https."""
    return (settings.public_url or "").startswith("https://") or request.url.scheme == "https"


async def sign_in(db: AsyncSession, request: Request, settings: Settings, principal: Principal,
                  response: Response) -> None:
    """Open a session for ``principal`` (the caller commits) and put its id in ``response``'s cookie."""
    session_id, ends = await start_session(db, principal, settings.web_session_ttl_s)
    max_age = max(int((ends - dt.datetime.now(dt.UTC)).total_seconds()), 1)
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="lax", path="/",
                        secure=secure_cookies(request, settings), max_age=max_age)


async def sign_out(db: AsyncSession, request: Request, response: Response) -> None:
    """End the request's session (the caller commits) and clear its cookie."""
    session_id = request.cookies.get(COOKIE)
    if session_id:
        await end_session(db, session_id)
    clear_token_cookie(response)


def clear_token_cookie(response: Response) -> None:
    """Forget the session cookie."""
    response.delete_cookie(COOKIE, path="/")


def stale_cookie(request: Request) -> bool:
    """Whether this request's cookie held a session that has ended (the page then clears it)."""
    return bool(request.state.get(STALE_FLAG))


def secret_key(settings: Settings) -> str:
    """``SECRET_KEY``, else a random one kept in ``DATA_DIR/secret-key`` (mode 600; made once, shared by the
    processes of one machine; several machines set ``SECRET_KEY``)."""
    if settings.secret_key:
        return settings.secret_key
    path: Path = settings.data_dir / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48) + "\n")
    return path.read_text().strip()


def csrf_config(settings: Settings) -> CSRFConfig:
    """CSRF protection of the pages' forms (a double-submit cookie, HMAC-signed); the JSON API and the Hub API
    (bearer tokens, under ``/api/``) are exempt: a browser never sends their credentials by itself."""
    return CSRFConfig(secret=secret_key(settings), cookie_name="registry_csrf", cookie_samesite="lax",
                      cookie_secure=(settings.public_url or "").startswith("https://"), cookie_httponly=True,
                      exclude=["^/api/"])


__all__ = ["COOKIE", "check_token", "clear_token_cookie", "csrf_config", "provide_viewer", "secure_cookies",
           "sign_in", "sign_out", "stale_cookie"]
