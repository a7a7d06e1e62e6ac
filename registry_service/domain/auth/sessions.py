"""Web sign-in sessions: the browser's cookie holds a random session id (never the API token), stored
here only as its sha256. A session names the token it was opened with and is checked through it
(:func:`.tokens.principal_by_id`), so revoking or expiring the token ends the session at once;
signing out deletes it."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import ApiToken, WebSession
from ...errors import Unauthorized
from .tokens import Principal, hash_token, principal_by_id


async def start_session(db: AsyncSession, principal: Principal, ttl_s: int) -> tuple[str, dt.datetime]:
    """Open a session for ``principal``'s token (the caller commits): its id for the cookie, and when it ends
    (after ``ttl_s`` seconds, or when the token expires if that is sooner). Ended sessions are cleared."""
    assert principal.token_id is not None
    now = dt.datetime.now(dt.UTC)
    token_end = await db.scalar(select(ApiToken.expires_at).where(ApiToken.id == principal.token_id))
    ends = min(now + dt.timedelta(seconds=ttl_s), token_end or dt.datetime.max.replace(tzinfo=dt.UTC))
    await db.execute(delete(WebSession).where(WebSession.expires_at <= now))
    session_id = secrets.token_urlsafe(32)
    db.add(WebSession(id_sha256=hash_token(session_id), token_id=principal.token_id, expires_at=ends))
    await db.flush()
    return session_id, ends


async def session_principal(db: AsyncSession, session_id: str) -> Principal:
    """The principal of a session; :class:`Unauthorized` when it ended (signed out, expired, token revoked)."""
    row = await db.get(WebSession, hash_token(session_id))
    if row is None or row.expires_at <= dt.datetime.now(dt.UTC):
        raise Unauthorized("this sign-in has ended; sign in again")
    return await principal_by_id(db, row.token_id)


async def end_session(db: AsyncSession, session_id: str) -> None:
    """Sign out: delete the session (the caller commits)."""
    await db.execute(delete(WebSession).where(WebSession.id_sha256 == hash_token(session_id)))


async def end_sessions_of(db: AsyncSession, token_id: int) -> None:
    """Delete every session opened with token ``token_id`` (it was revoked; the caller commits)."""
    await db.execute(delete(WebSession).where(WebSession.token_id == token_id))


__all__ = ["end_session", "end_sessions_of", "session_principal", "start_session"]
