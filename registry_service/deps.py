"""Dependencies injected into handlers: a database session, the reader engine, the blob store, the caller.

Only handlers that write (or read in a transaction) take ``db``: the hot reads take ``read`` (the
reader engine and the caller, :mod:`.domain.reading`), which opens no session (an anonymous caller
costs nothing, a token's lookup is cached for a few seconds)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from .domain.auth.guards import PRINCIPAL_STATE, principal_of
from .domain.auth.tokens import Principal
from .domain.events.tokens import ACTOR_KEY
from .domain.reading import Read
from .settings import Settings
from .storage import BlobStore


async def provide_db(state: State, request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request; handlers commit explicitly. Events its flushes write name the request's
    caller as their actor, once the caller is known (the ``principal`` dependency or a guard resolved it)."""
    async with state.sessionmaker() as session:
        request_state = request.scope.setdefault("state", {})
        session.info[ACTOR_KEY] = lambda: request_state.get(PRINCIPAL_STATE)
        yield session


async def provide_principal(request: Request) -> Principal:
    """The caller, from the bearer token (anonymous without one, at no cost); the one a guard found,
    if any. A token is looked up on the reader engine, only when its lookup is not cached."""
    return await principal_of(request)


async def provide_read(request: Request) -> Read:
    """What a hot read needs, as one dependency (:mod:`.domain.reading`): the reader, the caller (as
    :func:`provide_principal`), the settings, the store."""
    state = request.app.state
    return Read(state.reader, await principal_of(request), state.settings, state.store)


def provide_reader(state: State) -> AsyncEngine:
    """The engine for single-statement reads (autocommit; see ``db.session.make_reader``)."""
    return state.reader


def provide_store(state: State) -> BlobStore:
    """The blob store."""
    return state.store


def provide_settings(state: State) -> Settings:
    """The service settings."""
    return state.settings
