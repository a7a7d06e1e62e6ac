"""Concurrent pushes: version numbers only grow and none is lost or repeated."""

from __future__ import annotations

import asyncio
from pathlib import Path

from registry_testkit import Registry, push_files, register_base, saved_adapter, tiny_llama


async def test_32_simultaneous_pushes_get_versions_1_to_32(registry: Registry, tmp_path: Path) -> None:
    writer = await registry.token("alice", "write")
    await register_base(registry, "meta/tiny-llama", tiny_llama(), registry.admin)
    folders = [saved_adapter(tmp_path, seed=100 + i) for i in range(32)]

    async def push(folder: Path) -> int:
        r = await registry.client.post("/api/v1/adapters/alice/busy/versions", files=push_files(folder),
                                       data={"base_model": "meta/tiny-llama"}, headers=registry.auth(writer))
        assert r.status_code == 201, r.text
        return r.json()["version"]

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
