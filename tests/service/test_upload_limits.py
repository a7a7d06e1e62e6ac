"""Issue 14: upload sessions have a maximum size and expire, and namespaces have quotas (bytes held,
sessions open), each a setting."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from registry_testkit import push_files, register_base, saved_adapter, served, sql, tiny_llama
from safetensors.torch import save_file

from registry_service.app import create_app
from registry_service.domain import blob_commits
from registry_service.storage.local import LocalBlobStore

MiB = 2**20


async def test_sessions_have_a_maximum_size(registry_with) -> None:
    """A session larger than max_upload_session_bytes is refused (413) before anything is opened."""
    reg = await registry_with(max_upload_session_bytes=64 * MiB)
    alice = await reg.token("alice", "write")
    await register_base(reg, "meta/llama", tiny_llama(), reg.admin)
    for path, body in [("/api/v1/adapters/alice/chat/uploads", {"size": 64 * MiB + 1}),
                       ("/api/v1/base-models/meta/llama/uploads",
                        {"filename": "model.safetensors", "size": 64 * MiB + 1, "sha256": "0" * 64})]:
        token = alice if "adapters" in path else reg.admin
        r = await reg.client.post(path, json=body, headers=reg.auth(token))
        assert r.status_code == 413, r.text
        assert "max_upload_session_bytes" in r.json()["detail"]
    assert await reg.store.list_multipart_uploads() == []
    ok = await reg.client.post("/api/v1/adapters/alice/chat/uploads", json={"size": 64 * MiB}, headers=reg.auth(alice))
    assert ok.status_code == 201, ok.text


async def test_sessions_expire(registry_with) -> None:
    """A session answers with its expiry; past it, parts and finalize get 410 and only abort works."""
    reg = await registry_with(upload_session_ttl_s=600)
    alice = await reg.token("alice", "write")
    await register_base(reg, "meta/llama", tiny_llama(), reg.admin)
    opened = [await reg.client.post("/api/v1/adapters/alice/chat/uploads", json={"size": MiB},
                                    headers=reg.auth(alice)),
              await reg.client.post("/api/v1/base-models/meta/llama/uploads", headers=reg.auth(reg.admin),
                                    json={"filename": "model.safetensors", "size": MiB, "sha256": "0" * 64})]
    for r in opened:
        assert r.status_code == 201, r.text
        assert r.json()["expires_at"]
    await sql(reg, "UPDATE upload_session SET expires_at = now() - interval '1 second'")
    await sql(reg, "UPDATE base_model_upload SET expires_at = now() - interval '1 second'")
    for r, token in zip(opened, (alice, reg.admin), strict=True):
        session = r.json()
        part = await reg.client.put(session["parts"][0]["url"], content=b"x" * 100, headers=reg.auth(token))
        assert part.status_code == 410, part.text
        assert "expired" in part.json()["detail"]
        if "adapters" in session["finalize_url"]:
            done = await reg.client.post(session["finalize_url"], headers=reg.auth(token),
                                         files={"adapter_config.json": ("adapter_config.json", b"{}")},
                                         data={"parts": "[[1, \"x\"]]", "sha256": "0" * 64})
        else:
            done = await reg.client.post(session["finalize_url"], json={"parts": [[1, "x"]]}, headers=reg.auth(token))
        assert done.status_code == 410, done.text
        gone = await reg.client.delete(session["finalize_url"].removesuffix("/finalize"), headers=reg.auth(token))
        assert gone.status_code == 200 and gone.json()["state"] == "aborted"
    assert await reg.store.list_multipart_uploads() == []


async def test_open_sessions_per_namespace_are_bounded(registry_with) -> None:
    """namespace_max_open_uploads counts adapter and base-model sessions of the namespace together."""
    reg = await registry_with(namespace_max_open_uploads=2)
    alice = await reg.token("alice", "write")
    await register_base(reg, "alice/llama", tiny_llama(), alice)
    first = await reg.client.post("/api/v1/adapters/alice/a/uploads", json={"size": MiB}, headers=reg.auth(alice))
    second = await reg.client.post("/api/v1/base-models/alice/llama/uploads", headers=reg.auth(alice),
                                   json={"filename": "model.safetensors", "size": MiB, "sha256": "0" * 64})
    assert (first.status_code, second.status_code) == (201, 201)
    third = await reg.client.post("/api/v1/adapters/alice/b/uploads", json={"size": MiB}, headers=reg.auth(alice))
    assert third.status_code == 403, third.text
    assert "namespace_max_open_uploads" in third.json()["detail"] and third.json()["limit"] == 2
    bob = await reg.token("bob", "write")  # another namespace is not affected
    assert (await reg.client.post("/api/v1/adapters/bob/b/uploads", json={"size": MiB},
                                  headers=reg.auth(bob))).status_code == 201
    aborted = await reg.client.delete(first.json()["finalize_url"].removesuffix("/finalize"), headers=reg.auth(alice))
    assert aborted.status_code == 200
    again = await reg.client.post("/api/v1/adapters/alice/b/uploads", json={"size": MiB}, headers=reg.auth(alice))
    assert again.status_code == 201, again.text


async def test_bytes_per_namespace_are_bounded(registry_with, tmp_path: Path) -> None:
    """namespace_max_bytes counts the files the namespace holds and the sizes its open sessions
    reserve; a push past it is refused (403) and stores nothing."""
    folder = saved_adapter(tmp_path)
    size = sum((folder / f).stat().st_size for f in ("adapter_config.json", "adapter_model.safetensors"))
    reg = await registry_with(namespace_max_bytes=2 * size + size // 2)
    alice = await reg.token("alice", "write")
    await register_base(reg, "meta/llama", tiny_llama(), reg.admin)
    url = "/api/v1/adapters/alice/chat/versions"
    form = {"base_model": "meta/llama"}
    for _ in range(2):
        r = await reg.client.post(url, files=push_files(folder), data=form, headers=reg.auth(alice))
        assert r.status_code == 201, r.text
    keys = await reg.store.list_keys("")
    third = await reg.client.post(url, files=push_files(folder), data=form, headers=reg.auth(alice))
    assert third.status_code == 403, third.text
    assert "namespace_max_bytes" in third.json()["detail"] and third.json()["used"] == 2 * size
    assert await reg.store.list_keys("") == keys
    bob = await reg.token("bob", "write")
    assert (await reg.client.post("/api/v1/adapters/bob/chat/versions", files=push_files(folder), data=form,
                                  headers=reg.auth(bob))).status_code == 201
    # an open session reserves its size: after one of half the quota, bob cannot push twice more
    opened = await reg.client.post("/api/v1/adapters/bob/big/uploads", json={"size": size + size // 4},
                                   headers=reg.auth(bob))
    assert opened.status_code == 201
    refused = await reg.client.post("/api/v1/adapters/bob/chat/versions", files=push_files(folder), data=form,
                                    headers=reg.auth(bob))
    assert refused.status_code == 403, refused.text
    too_big = await reg.client.post("/api/v1/adapters/alice/big/uploads", json={"size": size},
                                    headers=reg.auth(alice))
    assert too_big.status_code == 403
    await register_base(reg, "alice/llama", tiny_llama(), alice)
    weights = tmp_path / "model.safetensors"
    save_file({"model.embed_tokens.weight": torch.zeros(100, 32)}, str(weights))
    files = await reg.client.post("/api/v1/base-models/alice/llama/files", headers=reg.auth(alice),
                                  files={"model.safetensors": ("model.safetensors", weights.read_bytes())})
    assert files.status_code == 403, files.text


async def test_racing_writes_cannot_pass_a_quota_together(registry_with, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Pushes and session opens racing each other are checked again under the namespace's quota lock
    in the transaction that commits them: exactly as many as fit get through. Slow storage (injected)
    makes every request pass the early check before any of them commits."""
    folder = saved_adapter(tmp_path)
    size = sum((folder / f).stat().st_size for f in ("adapter_config.json", "adapter_model.safetensors"))
    reg = await registry_with(namespace_max_bytes=3 * size + size // 2, namespace_max_open_uploads=2)
    alice = await reg.token("alice", "write")
    await register_base(reg, "meta/llama", tiny_llama(), reg.admin)
    store_missing, start_multipart = blob_commits._store_missing, LocalBlobStore.start_multipart

    async def slow_store(*args: Any) -> None:
        await asyncio.sleep(0.5)
        await store_missing(*args)

    async def slow_start(self: LocalBlobStore, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await start_multipart(self, *args, **kwargs)

    monkeypatch.setattr(blob_commits, "_store_missing", slow_store)
    monkeypatch.setattr(LocalBlobStore, "start_multipart", slow_start)
    with served(create_app(reg.settings)) as url:
        async with httpx.AsyncClient(base_url=url, headers=reg.auth(alice), timeout=60) as http:
            async def push(i: int) -> int:
                r = await http.post(f"/api/v1/adapters/alice/race{i}/versions", files=push_files(folder),
                                    data={"base_model": "meta/llama"})
                assert r.status_code in (201, 403), r.text
                return r.status_code

            codes = await asyncio.gather(*(push(i) for i in range(6)))
            assert sorted(codes) == [201] * 3 + [403] * 3
            after = await http.post("/api/v1/adapters/alice/late/versions", files=push_files(folder),
                                    data={"base_model": "meta/llama"})
            assert after.status_code == 403 and after.json()["used"] == 3 * size, after.text

            async def open_upload(i: int) -> int:
                r = await http.post(f"/api/v1/adapters/alice/up{i}/uploads", json={"size": 1024})
                assert r.status_code in (201, 403), r.text
                return r.status_code

            codes = await asyncio.gather(*(open_upload(i) for i in range(5)))
            assert sorted(codes) == [201] * 2 + [403] * 3


def test_limits_come_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Every limit is a setting read from ADAPTER_REGISTRY_<NAME> (the worker's from ..._WORKER_<NAME>)."""
    from registry_service.settings import LIMIT_FIELDS, Settings, WorkerSettings

    for i, name in enumerate(LIMIT_FIELDS):
        monkeypatch.setenv(f"ADAPTER_REGISTRY_{name.upper()}", str(1000 + i))
    monkeypatch.setenv("ADAPTER_REGISTRY_WORKER_JOB_TIMEOUT_S", "12.5")
    settings = Settings.from_env()
    assert [getattr(settings, name) for name in LIMIT_FIELDS] == [1000 + i for i in range(len(LIMIT_FIELDS))]
    assert WorkerSettings.from_env().job_timeout_s == 12.5
    monkeypatch.setenv("ADAPTER_REGISTRY_MAX_BODY_BYTES", "lots")
    with pytest.raises(ValueError, match="ADAPTER_REGISTRY_MAX_BODY_BYTES='lots'"):
        Settings.from_env()
