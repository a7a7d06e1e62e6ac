"""A short-lived, bounded cache of token lookups, used only through :func:`.tokens.cached_principal` and
:func:`.tokens.lookup_principal`.

A token is looked up in the database at most once per :data:`TOKEN_CACHE_SECONDS` per API process.
What that costs: a token revoked (or changed) through **another** process or directly in the
database is still accepted by this process for at most that long. In the process that changes it,
the change takes effect at once: any ``UPDATE``/``DELETE`` of ``api_token`` on an engine watched by
:func:`watch_token_writes` empties the cache when it runs and again when its transaction commits
(and nothing is cached for :data:`HOLD_SECONDS` after, while the COMMIT may still be on its way).
An expiry time is checked on every request, cached or not. Only accepted tokens are cached (unknown
ones are looked up each time), at most :data:`MAX_CACHED_TOKENS`, the oldest dropped first.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
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
_CHANGED = "api_token_changed"


class TokenCache:
    """sha256 of a token -> (principal, its expiry), each entry valid for :data:`TOKEN_CACHE_SECONDS`."""

    def __init__(self, seconds: float = TOKEN_CACHE_SECONDS, size: int = MAX_CACHED_TOKENS) -> None:
        self.seconds = seconds
        self.size = size
        self.generation = 0
        self._hold_until = 0.0
        self._entries: OrderedDict[str, tuple[float, Principal, dt.datetime | None]] = OrderedDict()

    def get(self, digest: str) -> tuple[Principal, dt.datetime | None] | None:
        """The cached lookup of ``digest`` while it is fresh."""
        hit = self._entries.get(digest)
        if hit is None:
            return None
        if time.monotonic() - hit[0] > self.seconds:
            self._entries.pop(digest, None)
            return None
        return hit[1], hit[2]

    def put(self, digest: str, principal: Principal, expires_at: dt.datetime | None, generation: int) -> None:
        """Keep a lookup that began at ``generation`` (dropped if the tokens changed since it began)."""
        if generation != self.generation or self.seconds <= 0 or time.monotonic() < self._hold_until:
            return
        self._entries[digest] = (time.monotonic(), principal, expires_at)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self, *, hold: bool = False) -> None:
        """Forget every lookup, and any lookup still running; ``hold``: keep nothing new for
        :data:`HOLD_SECONDS` either (a COMMIT is under way: a lookup now could still see the old row)."""
        self.generation += 1
        self._entries.clear()
        if hold:
            self._hold_until = time.monotonic() + HOLD_SECONDS


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


__all__ = ["MAX_CACHED_TOKENS", "TOKENS", "TOKEN_CACHE_SECONDS", "TokenCache", "watch_token_writes"]
