"""Dependencies injected into handlers: a database session, the blob store, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncSession

from .domain.auth.guards import PRINCIPAL_STATE
from .domain.auth.tokens import Principal, resolve
from .domain.events.tokens import ACTOR_KEY
from .settings import Settings
from .storage import BlobStore


async def provide_db(state: State) -> AsyncIterator[AsyncSession]:
    """A session per request; handlers commit explicitly."""
    async with state.sessionmaker() as session:
        yield session


async def provide_principal(request: Request, db: AsyncSession) -> Principal:
    """The caller, from the bearer token (anonymous without one); the one a guard found, if any."""
    known = request.state.get(PRINCIPAL_STATE)
    if isinstance(known, Principal):
        db.info[ACTOR_KEY] = known  # events written through this session name their actor
        return known
    principal = await resolve(db, request.headers.get("authorization"))
    await db.rollback()  # end the read-only transaction before the handler's own work
    request.state[PRINCIPAL_STATE] = principal
    db.info[ACTOR_KEY] = principal
    return principal


def provide_store(state: State) -> BlobStore:
    """The blob store."""
    return state.store


def provide_settings(state: State) -> Settings:
    """The service settings."""
    return state.settings
