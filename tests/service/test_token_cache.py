"""The token lookup cache under concurrency: one lookup for every request that misses at once, a
refresh in the background before an entry runs out, a refused refresh forgotten at once, and nothing
shared across a change of the tokens (:mod:`registry_service.domain.auth.token_cache`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from registry_testkit import Registry

from registry_service.domain.auth.token_cache import REFRESH_FRACTION, TOKENS, TokenCache
from registry_service.domain.auth.tokens import Principal
from registry_service.errors import Unauthorized

P = Principal(7, "ns", frozenset({"read"}), "t")


class Lookups:
    """A lookup that counts its calls and waits for ``gate`` (set: answers at once); ``refuse``: raises
    Unauthorized as a revoked token's lookup does."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse = False

    async def __call__(self) -> tuple[Principal, dt.datetime | None]:
        self.calls += 1
        await self.gate.wait()
        if self.refuse:
            raise Unauthorized("unknown or revoked token")
        return P, None


async def test_requests_that_miss_at_once_share_one_lookup() -> None:
    cache, lookup = TokenCache(seconds=60), Lookups()
    lookup.gate.clear()
    waiting = [asyncio.ensure_future(cache.load("d", lookup)) for _ in range(32)]
    await asyncio.sleep(0.01)
    lookup.gate.set()
    assert [p for p, _ in await asyncio.gather(*waiting)] == [P] * 32
    assert lookup.calls == 1 and cache.get("d") == (P, None)


async def test_a_request_that_goes_away_does_not_cancel_the_shared_lookup() -> None:
    cache, lookup = TokenCache(seconds=60), Lookups()
    lookup.gate.clear()
    first, second = (asyncio.ensure_future(cache.load("d", lookup)) for _ in range(2))
    await asyncio.sleep(0.01)
    first.cancel()
    lookup.gate.set()
    assert (await second)[0] == P and lookup.calls == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_refused_token_is_shared_as_refused_and_not_cached() -> None:
    cache, lookup = TokenCache(seconds=60), Lookups()
    lookup.refuse = True
    results = await asyncio.gather(*(cache.load("d", lookup) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in results) and lookup.calls == 1
    assert cache.get("d") is None
    with pytest.raises(Unauthorized):  # and the next request asks again
        await cache.load("d", lookup)
    assert lookup.calls == 2


async def test_an_entry_is_refreshed_in_the_background_before_it_runs_out() -> None:
    cache, lookup = TokenCache(seconds=1.0), Lookups()
    cache.put("d", P, None, cache.generation, started=time.monotonic() - 0.5 * REFRESH_FRACTION)
    assert not cache.due("d")
    cache.refresh("d", lookup)
    assert lookup.calls == 0  # young: nothing to do
    old = time.monotonic() - 1.0 * REFRESH_FRACTION - 0.05
    cache.put("d", P, None, cache.generation, started=old)
    assert cache.due("d")
    lookup.gate.clear()
    cache.refresh("d", lookup)
    cache.refresh("d", lookup)  # one refresh at a time
    assert not cache.due("d")
    await asyncio.sleep(0)
    assert lookup.calls == 1 and cache.get("d") == (P, None)  # still served while the refresh runs
    lookup.gate.set()
    await asyncio.sleep(0.01)
    assert cache._entries["d"][0] > old  # the entry's age starts again from the refresh
    assert not cache.due("d")


async def test_a_refresh_that_refuses_the_token_forgets_it_at_once() -> None:
    cache, lookup = TokenCache(seconds=1.0), Lookups()
    cache.put("d", P, None, cache.generation, started=time.monotonic() - REFRESH_FRACTION - 0.05)
    lookup.refuse = True
    cache.refresh("d", lookup)
    await asyncio.sleep(0.01)
    assert lookup.calls == 1 and cache.get("d") is None


async def test_an_entry_ages_from_when_its_lookup_began() -> None:
    cache, lookup = TokenCache(seconds=0.2), Lookups()
    lookup.gate.clear()
    waiting = asyncio.ensure_future(cache.load("d", lookup))
    await asyncio.sleep(0.25)  # the lookup took longer than the cache's bound
    lookup.gate.set()
    assert (await waiting)[0] == P
    assert cache.get("d") is None  # what it read is already older than the bound


async def test_no_lookup_is_shared_across_a_change_of_the_tokens() -> None:
    cache, lookup = TokenCache(seconds=60), Lookups()
    lookup.gate.clear()
    before = asyncio.ensure_future(cache.load("d", lookup))
    await asyncio.sleep(0.01)
    cache.clear()  # a token changed in this process while the lookup ran
    after = asyncio.ensure_future(cache.load("d", lookup))
    await asyncio.sleep(0.01)
    assert lookup.calls == 2  # the request after the change asked the database itself
    lookup.gate.set()
    await asyncio.gather(before, after)
    assert cache.get("d") == (P, None)  # … and only its answer is kept
    cache.clear(hold=True)  # while a COMMIT may still be under way, every request asks on its own
    await asyncio.gather(*(cache.load("d", lookup) for _ in range(3)))
    assert lookup.calls == 5 and cache.get("d") is None


async def test_concurrent_token_requests_after_expiry_cost_one_lookup(local_registry: Registry,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the app: 32 requests with a token whose entry just ran out read the token once."""
    from sqlalchemy import event

    reg = local_registry
    token = await reg.token("alice", "read")
    assert (await reg.client.get("/api/v1/whoami", headers=reg.auth(token))).status_code == 200
    TOKENS.clear()
    statements: list[str] = []
    reader = reg.client.app.state.reader

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(reader.sync_engine, "before_cursor_execute", seen)
    try:
        codes = await asyncio.gather(*(reg.client.get("/api/v1/whoami", headers=reg.auth(token)) for _ in range(32)))
    finally:
        event.remove(reader.sync_engine, "before_cursor_execute", seen)
    assert {r.status_code for r in codes} == {200}
    assert sum("FROM api_token" in s for s in statements) == 1, statements
