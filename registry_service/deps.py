"""Dependencies injected into handlers: a database session, the reader engine, the blob store, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from .domain.auth.guards import principal_of
from .domain.auth.tokens import Principal
from .domain.events.tokens import ACTOR_KEY
from .settings import Settings
from .storage import BlobStore


async def provide_db(state: State) -> AsyncIterator[AsyncSession]:
    """A session per request; handlers commit explicitly."""
    async with state.sessionmaker() as session:
        yield session


async def provide_principal(request: Request, db: AsyncSession) -> Principal:
    """The caller, from the bearer token (anonymous without one, at no cost); the one a guard found,
    if any. A token is looked up in a session of its own, and only when its lookup is not cached.
    Events written through the request's session name it as their actor."""
    principal = await principal_of(request)
    db.info[ACTOR_KEY] = principal
    return principal


def provide_reader(state: State) -> AsyncEngine:
    """The engine for single-statement reads (autocommit; see ``db.session.make_reader``)."""
    return state.reader


def provide_store(state: State) -> BlobStore:
    """The blob store."""
    return state.store


def provide_settings(state: State) -> Settings:
    """The service settings."""
    return state.settings
