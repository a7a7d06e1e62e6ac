"""The blob collection: what nothing references goes (after the grace period), what is referenced
stays, a dry run only reports, and a push racing a collection keeps its blob."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from registry_testkit import Registry, push_files, saved_adapter, sql, writer_with_base

from registry_service.db.session import make_engine, make_sessionmaker
from registry_service.domain.gc import collect


@pytest_asyncio.fixture
async def maker(db_url: str) -> AsyncIterator[Any]:
    """A sessionmaker on the registry's database in the test's own event loop (the app runs in another)."""
    engine = make_engine(db_url, pool_size=2)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def _open_session(reg: Registry, token: str, data: bytes) -> dict:
    r = await reg.client.post("/api/v1/adapters/alice/big/uploads", json={"size": len(data)}, headers=reg.auth(token))
    assert r.status_code == 201, r.text
    return r.json()


async def test_collection_removes_only_what_nothing_uses(registry: Registry, tmp_path: Path, maker: Any) -> None:
    reg = registry
    writer = await writer_with_base(reg)
    r = await reg.client.post("/api/v1/adapters/alice/a/versions", files=push_files(saved_adapter(tmp_path)),
                              data={"base_model": "meta/tiny-llama"}, headers=reg.auth(writer))
    assert r.status_code == 201
    kept = {f["sha256"] for f in r.json()["files"]}
    # a blob stored by a push whose process died before it committed
    orphan = await reg.store.put_file(io.BytesIO(b"orphaned bytes"))
    # an upload session that expired with a part uploaded, and a multipart upload no session owns
    session = await _open_session(reg, writer, b"x" * 64)
    await sql(reg, "UPDATE upload_session SET expires_at = now() - interval '1 minute'")
    # and one whose API process died while finalizing it, long ago
    stuck = await _open_session(reg, writer, b"y" * 64)
    await sql(reg, f"UPDATE upload_session SET state = 'finalizing', expires_at = now() - interval '2 hours' "
                   f"WHERE id = '{stuck['id']}'")
    stray = await reg.store.start_multipart("stray")
    # young objects are left alone (the default grace period)
    young = await collect(maker, reg.store, reg.settings)
    assert young.blobs == [] and young.multipart == [] and young.expired_sessions == [session["id"]]
    assert young.stuck_sessions == [stuck["id"]]
    dry = await collect(maker, reg.store, reg.settings, dry_run=True, grace_s=0)
    assert dry.blobs == [orphan.key] and stray.staging_key in dry.multipart
    assert await reg.store.exists(orphan.sha256)  # a dry run removes nothing
    done = await collect(maker, reg.store, reg.settings, grace_s=0)
    assert done.blobs == [orphan.key] and done.blob_bytes == len(b"orphaned bytes")
    assert not await reg.store.exists(orphan.sha256)
    assert await reg.store.list_multipart_uploads("") == []
    for sha in kept:
        assert await reg.store.exists(sha)
    got = await reg.client.get("/api/v1/adapters/alice/a/versions/1/files/adapter_model.safetensors?stream=1")
    assert got.status_code == 200
    # the expired session is over: it answers as ended, not as open
    r = await reg.client.post(session["finalize_url"], headers=reg.auth(writer), data={"parts": "[]"})
    assert r.status_code == 400 and "expired" in r.json()["detail"]
    again = await collect(maker, reg.store, reg.settings, grace_s=0)
    assert again.counts() == {k: 0 for k in again.counts()}


class RacingStore:
    """The local store, but right after the push under test has stored its blob (before it takes the
    blob's lock to commit), a collection with no grace period runs: the worst interleaving."""

    def __init__(self, inner: Any, reg: Registry) -> None:
        self.inner, self.reg, self.reports = inner, reg, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_file(self, source: Any) -> Any:
        info = await self.inner.put_file(source)
        if not self.reports:
            maker = self.reg.client.app.state.sessionmaker  # this runs in the app's event loop
            self.reports.append(await collect(maker, self.inner, self.reg.settings, grace_s=0))
        return info


async def test_a_push_racing_the_collection_keeps_its_blob(registry_with: Any, tmp_path: Path,
                                                           maker: Any) -> None:
    reg = await registry_with()
    writer = await writer_with_base(reg)
    racing = RacingStore(reg.store, reg)
    reg.client.app.state.store = racing  # what the routes' ``store`` dependency hands out
    r = await reg.client.post("/api/v1/adapters/alice/a/versions", files=push_files(saved_adapter(tmp_path)),
                              data={"base_model": "meta/tiny-llama"}, headers=reg.auth(writer))
    assert r.status_code == 201, r.text
    # the collection did run in the gap and removed what the push had stored (nothing referenced it yet) ...
    assert racing.reports and racing.reports[0].blobs
    # ... and the push, finding it gone under the lock, stored it again: every file is there
    for f in r.json()["files"]:
        assert await reg.store.exists(f["sha256"]), f["filename"]
        got = await reg.client.get(f"{f['url']}?stream=1")
        assert got.status_code == 200 and len(got.content) == f["size"]
    after = await collect(maker, reg.store, reg.settings, grace_s=0)
    assert after.blobs == []
