"""A short-lived, bounded cache of token lookups, used only through :func:`.tokens.principal_for`.

A token is looked up in the database at most once per :data:`TOKEN_CACHE_SECONDS` per API process.
What that costs: a token revoked (or changed) through **another** process or directly in the
database is still accepted by this process for at most that long. In the process that changes it,
the change takes effect at once: any ``UPDATE``/``DELETE`` of ``api_token`` on an engine watched by
:func:`watch_token_writes` empties the cache when it runs and again when its transaction commits
(and nothing is cached for :data:`HOLD_SECONDS` after, while the COMMIT may still be on its way).
An expiry time is checked on every request, cached or not. Only accepted tokens are cached (unknown
ones are looked up each time), at most :data:`MAX_CACHED_TOKENS`, the oldest dropped first.

An entry's age counts from when its lookup *began*. Lookups of one token are single-flight
(:meth:`TokenCache.load`): the requests that miss it at once share one query instead of each
opening a connection (under 32 concurrent requests, every expiry used to become 32 lookups, and
new pool connections, at once: a latency spike every few seconds). A token in use is looked up
again in the background once its entry is :data:`REFRESH_FRACTION` of its life old
(:meth:`TokenCache.refresh`), so requests do not wait for the database at all while it stays in use;
a refresh that refuses the token (revoked) drops its entry at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .tokens import Principal

#: Longest time a cached lookup is used: the bound on how late another process sees a revocation.
TOKEN_CACHE_SECONDS = 5.0
#: Most tokens kept.
MAX_CACHED_TOKENS = 10_000
#: After a transaction that changed tokens starts committing, nothing is cached for this long.
HOLD_SECONDS = 1.0
#: A cached token is looked up again (in the background, by one request) once its entry is this share of
#: :data:`TOKEN_CACHE_SECONDS` old.
REFRESH_FRACTION = 0.6
_CHANGED = "api_token_changed"

#: A token's lookup: its principal and expiry, or an exception (``Unauthorized`` for a refused token).
Lookup = Callable[[], Awaitable[tuple["Principal", dt.datetime | None]]]


class TokenCache:
    """sha256 of a token -> (principal, its expiry), each entry valid for :data:`TOKEN_CACHE_SECONDS`
    from the start of its lookup."""

    def __init__(self, seconds: float = TOKEN_CACHE_SECONDS, size: int = MAX_CACHED_TOKENS) -> None:
        self.seconds = seconds
        self.size = size
        self.generation = 0
        self._hold_until = 0.0
        self._entries: OrderedDict[str, tuple[float, Principal, dt.datetime | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[tuple[Principal, dt.datetime | None]]] = {}

    def get(self, digest: str) -> tuple[Principal, dt.datetime | None] | None:
        """The cached lookup of ``digest`` while it is fresh."""
        hit = self._entries.get(digest)
        if hit is None:
            return None
        if time.monotonic() - hit[0] > self.seconds:
            self._entries.pop(digest, None)
            return None
        return hit[1], hit[2]

    def due(self, digest: str) -> bool:
        """Whether the cached lookup of ``digest`` is old enough to be looked up again (:data:`REFRESH_FRACTION`)
        and no lookup of it is under way."""
        hit = self._entries.get(digest)
        return (hit is not None and digest not in self._inflight
                and time.monotonic() - hit[0] > self.seconds * REFRESH_FRACTION)

    def put(self, digest: str, principal: Principal, expires_at: dt.datetime | None, generation: int,
            started: float | None = None) -> None:
        """Keep a lookup that began at ``generation`` (dropped if the tokens changed since it began) and
        at monotonic time ``started`` (default now): the entry's age counts from then."""
        if generation != self.generation or self.seconds <= 0 or time.monotonic() < self._hold_until:
            return
        self._entries[digest] = (time.monotonic() if started is None else started, principal, expires_at)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    async def load(self, digest: str, lookup: Lookup) -> tuple[Principal, dt.datetime | None]:
        """``lookup()`` of ``digest``, shared with every request that asks while it runs (single
        flight), and cached. While a change of the tokens may still be committing (:meth:`clear` with
        ``hold``), each request looks up on its own (one begun earlier could still see the old row)."""
        if time.monotonic() < self._hold_until:
            return await lookup()
        task = self._inflight.get(digest)
        if task is None:
            task = self._start(digest, lookup)
        # shielded: a request that goes away does not cancel the lookup the others wait for
        return await asyncio.shield(task)

    def refresh(self, digest: str, lookup: Lookup) -> None:
        """Look ``digest`` up again in the background (when :meth:`due`); a refused token is then forgotten."""
        if self.due(digest) and time.monotonic() >= self._hold_until:
            self._start(digest, lookup)

    def _start(self, digest: str, lookup: Lookup) -> asyncio.Task[tuple[Principal, dt.datetime | None]]:
        generation, started = self.generation, time.monotonic()

        async def run() -> tuple[Principal, dt.datetime | None]:
            try:
                principal, expires_at = await lookup()
            except BaseException:
                if generation == self.generation:
                    self._entries.pop(digest, None)  # refused (or unknown): nothing stale stays
                raise
            finally:
                if self._inflight.get(digest) is task:
                    del self._inflight[digest]
            self.put(digest, principal, expires_at, generation, started)
            return principal, expires_at

        task = asyncio.ensure_future(run())
        task.add_done_callback(_retrieve)
        self._inflight[digest] = task
        return task

    def clear(self, *, hold: bool = False) -> None:
        """Forget every lookup, and any lookup still running; ``hold``: keep nothing new for
        :data:`HOLD_SECONDS` either (a COMMIT is under way: a lookup now could still see the old row)."""
        self.generation += 1
        self._entries.clear()
        self._inflight.clear()  # a request from now on starts a lookup of its own
        if hold:
            self._hold_until = time.monotonic() + HOLD_SECONDS


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a lookup's exception as seen (a background refresh has nobody awaiting it)."""
    if not task.cancelled():
        task.exception()


#: The API process's cache.
TOKENS = TokenCache()


def _touches_tokens(statement: str) -> bool:
    head = statement.lstrip()[:40].upper()
    return head.startswith(("UPDATE API_TOKEN", "DELETE FROM API_TOKEN"))


def watch_token_writes(engine: AsyncEngine, cache: TokenCache = TOKENS) -> None:
    """Empty ``cache`` whenever ``engine`` changes or deletes tokens (when the statement runs and
    when its transaction commits), so the process that revokes a token refuses it at once."""
    sync = engine.sync_engine

    def after_execute(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if _touches_tokens(statement):
            conn.info[_CHANGED] = True
            cache.clear()

    def on_commit(conn: Any) -> None:
        if conn.info.pop(_CHANGED, False):
            cache.clear(hold=True)

    event.listen(sync, "after_cursor_execute", after_execute)
    event.listen(sync, "commit", on_commit)
    def on_rollback(conn: Any) -> None:
        if not conn.invalidated:  # an invalidated connection's info is gone with it
            conn.info.pop(_CHANGED, None)

    event.listen(sync, "rollback", on_rollback)


__all__ = ["MAX_CACHED_TOKENS", "REFRESH_FRACTION", "TOKENS", "TOKEN_CACHE_SECONDS", "Lookup", "TokenCache",
           "watch_token_writes"]
