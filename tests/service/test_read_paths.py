"""The fast read paths: keyset paging of search and version listings, the token lookup cache and its
bounded revocation delay, and visibility on every one of them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from registry_testkit import Registry, sql
from sqlalchemy import text

from registry_service.domain.auth.token_cache import TOKENS

ADAPTERS = "/api/v1/adapters"


async def seed(reg: Registry, *, public: int, private: int = 0, versions: int = 1, same_time: bool = True) -> None:
    """``public`` adapters ``pub/a0..`` and ``private`` ones ``priv/p0..`` (``versions`` each), written
    straight into the tables; ``same_time``: all with one ``updated_at`` (the order must still be stable)."""
    when = "'2026-01-01T00:00:00+00'" if same_time else "now() - (random() * interval '1 day')"
    await sql(reg, "INSERT INTO base_model (namespace, name, signature, fingerprint) VALUES ('meta', 'b', '{}', 'fp')")
    await sql(reg, f"""
        INSERT INTO adapter (namespace, name, base_model_id, method, description, tags, visibility, next_version,
                             updated_at)
        SELECT CASE WHEN i < {public} THEN 'pub' ELSE 'priv' END,
               CASE WHEN i < {public} THEN 'a' || i ELSE 'p' || (i - {public}) END,
               (SELECT id FROM base_model), 'LORA', 'seeded', ARRAY['t' || (i % 2)],
               CASE WHEN i < {public} THEN 'public' ELSE 'private' END, {versions + 1}, {when}
        FROM generate_series(0, {public + private - 1}) AS i""")
    await sql(reg, f"""
        INSERT INTO adapter_version (adapter_id, version, commit, config, summary, parents)
        SELECT a.id, v, md5(a.namespace || a.name || v) || '00000000', '{{}}', '{{}}', '[]'
        FROM adapter a, generate_series(1, {versions}) AS v""")
    await sql(reg, """INSERT INTO alias (adapter_id, name, version_id)
                      SELECT adapter_id, 'latest', max(id) FROM adapter_version GROUP BY adapter_id""")


async def walk(reg: Registry, params: dict[str, Any], headers: dict[str, str] | None = None) -> list[list[str]]:
    """Every page of a search by cursor: the names on each page."""
    pages: list[list[str]] = []
    cursor = None
    for _ in range(50):
        r = await reg.client.get(ADAPTERS, params=params | ({"cursor": cursor} if cursor else {}), headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([a["name"] for a in body["items"]])
        assert body["has_more"] == (body["next_cursor"] is not None)
        if not body["has_more"]:
            return pages
        cursor = body["next_cursor"]
    raise AssertionError("paging never ended")


async def test_search_pages_by_cursor_in_a_stable_order_and_says_whether_more_follow(
        local_registry: Registry) -> None:
    reg = local_registry
    await seed(reg, public=7, private=3)  # all updated at the same instant: ties broken by id
    pages = await walk(reg, {"page_size": 3})
    assert [len(p) for p in pages] == [3, 3, 1]
    flat = [n for p in pages for n in p]
    assert len(set(flat)) == 7 and all(n.startswith("pub/") for n in flat)  # private ones stay hidden
    by_offset = [a["name"] for page in (1, 2, 3)
                 for a in (await reg.client.get(ADAPTERS, params={"page": page, "page_size": 3})).json()["items"]]
    assert flat == by_offset  # the same order as the page/offset listing
    first = (await reg.client.get(ADAPTERS, params={"page_size": 3})).json()
    assert first["total"] is None and first["total_exact"] is False  # not counted unless asked: a scan of them all
    counted = (await reg.client.get(ADAPTERS, params={"page_size": 3, "count": "true"})).json()
    assert counted["total"] == 7 and counted["total_exact"] is True
    later = (await reg.client.get(ADAPTERS, params={"page_size": 3, "cursor": first["next_cursor"],
                                                     "count": "true"})).json()
    assert later["total"] is None  # not counted again by cursor: the first page's count stands
    last = (await reg.client.get(ADAPTERS, params={"page_size": 3, "page": 3})).json()
    assert last["total"] == 7 and last["total_exact"] is True and not last["has_more"]  # the last page: free
    past = (await reg.client.get(ADAPTERS, params={"page_size": 3, "page": 9, "count": "true"})).json()
    assert past["items"] == [] and past["total"] == 7
    # filters hold across pages; the owner's token sees its private adapters in the same walk
    assert [n for p in await walk(reg, {"page_size": 2, "tag": "t1"}) for n in p] == \
        [n for n in flat if int(n.split("a")[-1]) % 2 == 1]
    owner = await reg.token("priv", "read")
    owned = [n for p in await walk(reg, {"page_size": 4}, reg.auth(owner)) for n in p]
    assert len(owned) == 10 and sum(n.startswith("priv/") for n in owned) == 3
    other = await reg.token("pub", "read")
    assert [n for p in await walk(reg, {"page_size": 4}, reg.auth(other)) for n in p] == flat


async def test_the_api_counts_up_to_1000_matches_when_asked_the_pages_count_all(local_registry: Registry) -> None:
    reg = local_registry
    await seed(reg, public=1003)
    body = (await reg.client.get(ADAPTERS, params={"q": "seeded", "count": "true"})).json()
    assert body["total"] == 1000 and body["total_exact"] is False and body["has_more"]
    base = (await reg.client.get("/api/v1/base-models/meta/b/adapters", params={"count": "true"})).json()
    assert base["total"] == 1000 and base["total_exact"] is False
    tagged = (await reg.client.get(ADAPTERS, params={"tag": "t1", "count": "true"})).json()
    assert tagged["total"] == 501 and tagged["total_exact"] is True  # within the bound: exact
    page = await reg.client.get("/adapters", params={"q": "seeded"}, headers={"Accept": "text/html"})
    assert page.status_code == 200 and "1003 adapters" in page.text  # the pages count every match


@pytest.mark.parametrize("cursor", ["garbage!", "MjAyNnwx", "eHx5"])
async def test_a_cursor_that_is_not_ours_is_a_400(local_registry: Registry, cursor: str) -> None:
    r = await local_registry.client.get(ADAPTERS, params={"cursor": cursor})
    assert r.status_code == 400, r.text
    assert "cursor" in r.json()["detail"]


async def test_version_listing_pages_by_cursor(local_registry: Registry) -> None:
    reg = local_registry
    await seed(reg, public=1, versions=25)
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 10}
    for _ in range(5):
        body = (await reg.client.get(f"{ADAPTERS}/pub/a0/versions", params=params)).json()
        seen += [v["version"] for v in body["items"]]
        if not body["has_more"]:
            break
        params["before"] = body["next_before"]
    assert seen == list(range(25, 0, -1))
    assert (await reg.client.get(f"{ADAPTERS}/pub/a0/versions", params={"limit": 1001})).status_code == 400


async def revoke(reg: Registry, engine: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE api_token SET revoked = true WHERE namespace = 'priv'"))


async def test_a_token_revoked_elsewhere_is_refused_within_the_cache_bound_and_here_at_once(
        local_registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from registry_service.db.session import async_url

    reg = local_registry
    await seed(reg, public=1, private=1)
    monkeypatch.setattr(TOKENS, "seconds", 1.0)
    url = f"{ADAPTERS}/priv/p0/versions/1"
    token = await reg.token("priv", "read")
    assert (await reg.client.get(url, headers=reg.auth(token))).status_code == 200  # looked up, now cached
    other = create_async_engine(async_url(reg.db_url))  # another process, as far as this one can tell
    try:
        await revoke(reg, other)
    finally:
        await other.dispose()
    started = time.monotonic()
    while (r := await reg.client.get(url, headers=reg.auth(token))).status_code == 200:
        assert time.monotonic() - started < TOKENS.seconds + 0.5, "a revoked token outlived the cache bound"
        await asyncio.sleep(0.05)
    assert r.status_code == 401 and "revoked" in r.text


async def test_a_token_revoked_through_this_process_is_forgotten_at_once(local_registry: Registry) -> None:
    """Any UPDATE of api_token on a watched engine (the app's) empties the cache when it runs and at
    COMMIT, and nothing read meanwhile is kept: the next lookup goes to the database."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from registry_service.db.session import async_url
    from registry_service.domain.auth.token_cache import TokenCache, watch_token_writes
    from registry_service.domain.auth.tokens import Principal

    cache = TokenCache(seconds=60)
    engine = create_async_engine(async_url(local_registry.db_url))
    watch_token_writes(engine, cache)
    try:
        cache.put("d", Principal(1, "ns", frozenset({"read"})), None, cache.generation)
        assert cache.get("d") is not None
        async with engine.connect() as conn:
            await conn.execute(text("SELECT count(*) FROM api_token"))  # reads leave the cache alone
            assert cache.get("d") is not None
            await conn.rollback()
            await conn.begin()
            await conn.execute(text("UPDATE api_token SET revoked = true WHERE namespace = 'nobody'"))
            assert cache.get("d") is None  # emptied when the statement ran
            started = cache.generation
            cache.put("d", Principal(1, "ns", frozenset({"read"})), None, started)  # read before COMMIT
            await conn.commit()
        assert cache.get("d") is None  # … is dropped again at COMMIT
        cache.put("d", Principal(1, "ns", frozenset({"read"})), None, cache.generation)
        assert cache.get("d") is None  # and nothing is kept while the COMMIT may still be under way
    finally:
        await engine.dispose()


async def test_a_private_version_is_never_served_from_a_fast_path_to_who_cannot_read_it(
        local_registry: Registry) -> None:
    reg = local_registry
    await seed(reg, public=0, private=1)
    owner, stranger = await reg.token("priv", "read"), await reg.token("pub", "read")
    body = (await reg.client.get(f"{ADAPTERS}/priv/p0/versions/1", headers=reg.auth(owner))).json()
    commit = body["commit"]
    paths = [f"{ADAPTERS}/priv/p0/versions/{ref}" for ref in ("1", "latest", commit)] + [
        f"/api/models/priv/p0/revision/{commit}", f"{ADAPTERS}/priv/p0", f"{ADAPTERS}/priv/p0/versions"]

    async def codes(token: str | None) -> set[int]:
        return {(await reg.client.get(p, headers=reg.auth(token))).status_code for p in paths}

    for _ in range(2):  # the second time every lookup (token, statement) is warm
        assert await codes(owner) == {200}
        assert await codes(None) <= {401, 404} and await codes(stranger) <= {401, 404}
    await sql(reg, "UPDATE adapter SET visibility = 'public'")
    assert await codes(None) == {200} and await codes(stranger) == {200}
    await sql(reg, "UPDATE adapter SET visibility = 'private'")  # and back: nothing stale is served
    assert await codes(None) <= {401, 404} and await codes(stranger) <= {401, 404}
    assert "p0" not in (await reg.client.get(ADAPTERS, params={"q": "p0"}, headers=reg.auth(stranger))).text


async def test_text_search_matches_every_field_and_nothing_else(local_registry: Registry) -> None:
    """Each word (case-insensitive, ``%``/``_`` literal) must appear in the name, namespace, description,
    a tag or the base model's ``ns/name``; the answer is what that rule says of every row, the private
    adapter left out (migration 0013 changed how the tags and base model are matched, not what matches)."""
    reg = local_registry
    await sql(reg, "INSERT INTO base_model (namespace, name, signature, fingerprint) VALUES "
                   "('meta', 'Llama-3', '{}', 'f1'), ('org', 'mistral_7b', '{}', 'f2')")
    rows = [  # namespace, name, base model, description, tags, visibility
        ("alice", "legal-qa", "Llama-3", "answers contracts", ["law", "en"], "public"),
        ("bob", "coder", "mistral_7b", "writes SQL 100%", ["code"], "public"),
        ("carol", "poet", "Llama-3", "", ["Verse", "legalese"], "public"),
        ("dave", "plain", "mistral_7b", "nothing special", [], "public"),
        ("erin", "secret-legal", "Llama-3", "", ["law"], "private"),
    ]
    from sqlalchemy.ext.asyncio import create_async_engine

    from registry_service.db.session import async_url

    engine = create_async_engine(async_url(reg.db_url))
    async with engine.begin() as conn:
        for ns, name, base, desc, tags, vis in rows:
            await conn.execute(text(
                "INSERT INTO adapter (namespace, name, base_model_id, method, description, tags, visibility, "
                "next_version) VALUES (:ns, :name, (SELECT id FROM base_model WHERE name = :base), 'LORA', :desc, "
                ":tags, :vis, 1)"), {"ns": ns, "name": name, "base": base, "desc": desc, "tags": tags, "vis": vis})
    await engine.dispose()

    def expected(q: str) -> set[str]:
        bases = {"Llama-3": "meta/Llama-3", "mistral_7b": "org/mistral_7b"}
        return {f"{ns}/{name}" for ns, name, base, desc, tags, vis in rows if vis == "public" and all(
            any(w.lower() in f.lower() for f in (ns, name, desc, " ".join(tags), bases[base])) for w in q.split())}

    for q in ("legal", "LAW", "llama", "meta/llama", "mistral_7", "7b", "verse", "100%", "_", "law en", "legal law",
              "a/l", "nothing-at-all", "legalese contracts"):
        r = await reg.client.get(ADAPTERS, params={"q": q, "page_size": 100})
        assert r.status_code == 200, r.text
        found = {a["name"] for a in r.json()["items"]}
        assert found == expected(q), q
    assert expected("legal") == {"alice/legal-qa", "carol/poet"}  # the rule itself: name, and a tag's substring
    assert expected("llama") == {"alice/legal-qa", "carol/poet"}  # the base model's name


async def test_a_search_statement_is_built_once_per_shape_and_never_shared_across_callers(
        local_registry: Registry) -> None:
    """The statement depends on the shape of a search (caller kind, filters given, number of words), its
    values are bound: other words reuse it, and a token's search never sees another caller's answer."""
    from registry_service.domain.adapters import search

    reg = local_registry
    await seed(reg, public=2, private=2)
    owner = await reg.token("priv", "read")
    search.page_statement.cache_clear()

    async def names(params: dict[str, Any], token: str | None = None) -> set[str]:
        r = await reg.client.get(ADAPTERS, params=params, headers=reg.auth(token))
        assert r.status_code == 200, r.text
        return {a["name"].rpartition("/")[2] for a in r.json()["items"]}

    assert await names({"q": "a0"}) == {"a0"}
    assert await names({"q": "p0"}) == set()  # the same shape, other values: private stays private
    assert search.page_statement.cache_info().misses == 1 and search.page_statement.cache_info().hits == 1
    assert await names({"q": "p0"}, owner) == {"p0"}  # another caller kind: another statement
    assert await names({"q": "seeded", "tag": "t0"}, owner) == {"a0", "p0"}
    assert await names({"q": "seeded", "tag": "t1"}) == {"a1"}
    assert await names({"q": "100%_"}) == set()  # % and _ taken literally
    assert search.page_statement.cache_info()[:2] == (2, 4)  # (hits, misses): four shapes


async def test_a_version_listing_is_one_query_with_only_its_own_aliases_and_files(local_registry: Registry) -> None:
    """The adapter, its aliases and a page of its versions come from one statement: nothing of another
    adapter's leaks in, and an adapter without versions lists none."""
    reg = local_registry
    await seed(reg, public=3, versions=3)
    await sql(reg, "INSERT INTO alias (adapter_id, name, version_id) SELECT adapter_id, 'prod-' || adapter_id, min(id) "
                   "FROM adapter_version GROUP BY adapter_id")
    await sql(reg, "INSERT INTO file (version_id, filename, size, sha256, storage_key) SELECT v.id, 'f' || a.name, "
                   "v.version, repeat('0', 64), 'k' FROM adapter_version v JOIN adapter a ON a.id = v.adapter_id")
    await sql(reg, "DELETE FROM alias WHERE adapter_id = (SELECT id FROM adapter WHERE name = 'a2')")
    await sql(reg, "DELETE FROM adapter_version WHERE adapter_id = (SELECT id FROM adapter WHERE name = 'a2')")
    ids = {}
    for name in ("a0", "a1"):
        body = (await reg.client.get(f"{ADAPTERS}/pub/{name}")).json()
        ids[name] = body["aliases"]
    r = await reg.client.get(f"{ADAPTERS}/pub/a0/versions", params={"limit": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["aliases"] == ids["a0"] and len(body["aliases"]) == 2  # latest and its own prod-…
    assert [v["version"] for v in body["items"]] == [3, 2] and body["has_more"] and body["next_before"] == 2
    assert {f["filename"] for v in body["items"] for f in v["files"]} == {"fa0"}
    rest = (await reg.client.get(f"{ADAPTERS}/pub/a0/versions", params={"before": 2})).json()
    assert [v["version"] for v in rest["items"]] == [1] and not rest["has_more"]
    empty = await reg.client.get(f"{ADAPTERS}/pub/a2/versions")
    assert empty.status_code == 200 and empty.json()["items"] == [] and empty.json()["aliases"] == {}
    assert (await reg.client.get(f"{ADAPTERS}/pub/nope/versions")).status_code == 404
