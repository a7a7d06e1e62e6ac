"""Concurrent pushes: version numbers only grow and none is lost or repeated."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from registry_testkit import Registry, push_files, register_base, saved_adapter, served, tiny_llama

from registry_service.app import create_app


async def test_32_simultaneous_pushes_get_versions_1_to_32(registry: Registry, tmp_path: Path) -> None:
    """32 pushes to one name at once, through a real server (the test client would take them one by
    one), get versions 1..32."""
    writer = await registry.token("alice", "write")
    await register_base(registry, "meta/tiny-llama", tiny_llama(), registry.admin)
    folders = [saved_adapter(tmp_path, seed=100 + i) for i in range(32)]

    with served(create_app(registry.settings.model_copy(update={"max_concurrent_uploads": 32}))) as url:
        async with httpx.AsyncClient(base_url=url, headers=registry.auth(writer), timeout=120) as http:
            async def push(folder: Path) -> int:
                r = await http.post("/api/v1/adapters/alice/busy/versions", files=push_files(folder),
                                    data={"base_model": "meta/tiny-llama"})
                assert r.status_code == 201, r.text
                return int(r.json()["version"])

            versions = await asyncio.gather(*(push(f) for f in folders))
    assert sorted(versions) == list(range(1, 33))
    listed = (await registry.client.get("/api/v1/adapters/alice/busy/versions")).json()
    assert [v["version"] for v in listed["items"]] == list(range(32, 0, -1))
    assert len({v["commit"] for v in listed["items"]}) == 32
    assert listed["aliases"]["latest"] == 32
    # every version serves the weights that were pushed for it
    by_version = {v["version"]: v for v in listed["items"]}
    sha_of = {f["sha256"] for v in by_version.values() for f in v["files"] if f["filename"].endswith(".safetensors")}
    assert len(sha_of) == 32


async def test_pushes_sharing_a_readme_do_not_wait_for_each_other_but_a_delete_waits(
        registry: Registry, tmp_path: Path) -> None:
    """The per-blob lock only guards the dedup decision: a publish that references a blob takes it
    shared, so a push whose README is the one another push is committing right now goes through
    (with an exclusive lock, the old rule, it would wait for that whole transaction), while deleting
    the blob (exclusive) waits until the referencing transaction has ended."""
    import hashlib
    import io

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from registry_service.db.session import async_url
    from registry_service.domain.blob_commits import lock_blob

    writer = await registry.token("alice", "write")
    await register_base(registry, "meta/tiny-llama", tiny_llama(), registry.admin)
    readme = b"---\nlibrary_name: peft\n---\n# the model card save_pretrained writes everywhere\n"
    sha = hashlib.sha256(readme).hexdigest()
    engine = create_async_engine(async_url(registry.db_url))
    try:
        async with engine.connect() as held:  # a publish of another adapter, mid-decision on the README
            await held.begin()
            await held.execute(text("SELECT pg_advisory_xact_lock_shared(hashtextextended(:k, 7))"), {"k": sha})
            files = push_files(saved_adapter(tmp_path, seed=7)) | {"README.md": ("README.md", io.BytesIO(readme),
                                                                                  "text/markdown")}
            r = await asyncio.wait_for(registry.client.post(
                "/api/v1/adapters/alice/card/versions", files=files, data={"base_model": "meta/tiny-llama"},
                headers=registry.auth(writer)), timeout=60)
            assert r.status_code == 201, r.text
            assert {f["filename"]: f["sha256"] for f in r.json()["files"]}["README.md"] == sha

            async def delete_decision() -> None:
                async with engine.connect() as other:
                    await other.begin()
                    await other.execute(text("SET LOCAL lock_timeout = '1s'"))
                    await lock_blob(other, sha)  # type: ignore[arg-type]  # exclusive: what a delete takes

            try:
                await delete_decision()
                raise AssertionError("an exclusive (delete) lock was granted while a publish referenced the blob")
            except Exception as exc:  # lock_timeout: the delete waits for the referencing transaction
                assert "lock timeout" in str(exc).lower() or "LockNotAvailable" in type(exc.__cause__).__name__, exc
            await held.rollback()
        await delete_decision()  # granted once the referencing transaction ended
    finally:
        await engine.dispose()
