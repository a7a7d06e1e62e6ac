"""Large files: multipart upload sessions (straight to S3 via presigned URLs), then finalize."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import httpx
import torch
from registry_testkit import Registry, put_parts, snapshot
from safetensors.torch import save_file
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import sdk
from registry_service.db.session import async_url

HIDDEN = 1024


def big_base_config() -> dict:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128, hidden_size=HIDDEN, intermediate_size=2048, num_hidden_layers=2,
                       num_attention_heads=8, num_key_value_heads=8).to_dict() | {"architectures": ["LlamaForCausalLM"]}


def big_adapter(tmp: Path, r: int = 160) -> tuple[bytes, bytes]:
    """An ~10 MB LoRA (q,k,v,o of 2 layers) built tensor by tensor: (config json, safetensors bytes)."""
    cfg = sdk.LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(2):
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            key = f"base_model.model.model.layers.{i}.self_attn.{m}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, HIDDEN, generator=g)
            tensors[f"{key}.lora_B.weight"] = torch.randn(HIDDEN, r, generator=g) * 0.01
    path = tmp / "big.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return cfg.to_json().encode(), path.read_bytes()


async def setup(reg: Registry) -> str:
    writer = await reg.token("alice", "write")
    r = await reg.client.post("/api/v1/base-models", json={"name": "meta/wide-llama", "config": big_base_config()},
                              headers=reg.auth(reg.admin))
    assert r.status_code == 201, r.text
    return writer


async def test_multipart_upload_then_finalize_publishes(registry: Registry, tmp_path: Path) -> None:
    writer = await setup(registry)
    config, data = big_adapter(tmp_path)
    assert len(data) > 10 * 2**20
    sha = hashlib.sha256(data).hexdigest()
    r = await registry.client.post("/api/v1/adapters/alice/wide/uploads", json={"size": len(data), "sha256": sha},
                                   headers=registry.auth(writer))
    assert r.status_code == 201, r.text
    session = r.json()
    assert len(session["parts"]) == 3  # 5 MiB parts (the test settings), the last one smaller
    assert session["direct"] == registry.settings.uses_s3  # S3: the bytes never pass through the API
    parts = await put_parts(registry, session, data, writer)
    r = await registry.client.post(session["finalize_url"], headers=registry.auth(writer),
                                   files={"adapter_config.json": ("adapter_config.json", io.BytesIO(config))},
                                   data={"parts": json.dumps(parts), "base_model": "meta/wide-llama", "alias": "big"})
    assert r.status_code == 201, r.text
    version = r.json()
    weights = next(f for f in version["files"] if f["filename"] == "adapter_model.safetensors")
    assert weights["sha256"] == sha and weights["size"] == len(data)
    got = await registry.client.get(weights["url"] + "?stream=1", headers={"Range": "bytes=0-99"})
    assert got.content == data[:100]
    assert await registry.store.list_keys("staging/") == []


async def test_finalize_refuses_bytes_that_are_not_the_declared_file(registry: Registry, tmp_path: Path) -> None:
    writer = await setup(registry)
    config, data = big_adapter(tmp_path, r=64)
    before = await snapshot(registry)
    r = await registry.client.post("/api/v1/adapters/alice/wide/uploads",
                                   json={"size": len(data), "sha256": hashlib.sha256(b"other").hexdigest()},
                                   headers=registry.auth(writer))
    session = r.json()
    parts = await put_parts(registry, session, data, writer)
    r = await registry.client.post(session["finalize_url"], headers=registry.auth(writer),
                                   files={"adapter_config.json": ("adapter_config.json", io.BytesIO(config))},
                                   data={"parts": json.dumps(parts), "base_model": "meta/wide-llama"})
    assert r.status_code == 422, r.text
    assert "not the declared file" in r.json()["detail"]
    counts, keys = await snapshot(registry)
    assert keys == before[1] and counts["adapter_version"] == before[0]["adapter_version"]


async def test_finalize_validates_like_a_direct_push(registry: Registry, tmp_path: Path) -> None:
    writer = await setup(registry)
    _, data = big_adapter(tmp_path, r=64)
    wrong_config = sdk.LoraConfig(r=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]).to_json().encode()
    before = await snapshot(registry)
    r = await registry.client.post("/api/v1/adapters/alice/wide/uploads",
                                   json={"size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
                                   headers=registry.auth(writer))
    session = r.json()
    parts = await put_parts(registry, session, data, writer)
    r = await registry.client.post(session["finalize_url"], headers=registry.auth(writer),
                                   files={"adapter_config.json": ("adapter_config.json", io.BytesIO(wrong_config))},
                                   data={"parts": json.dumps(parts), "base_model": "meta/wide-llama"})
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert len(problems) == 16 and "r is 64, expected 32" in problems[0]["message"]
    counts, keys = await snapshot(registry)
    assert keys == before[1] and counts == before[0] | {"namespace": counts["namespace"]}


async def test_abort_drops_the_parts(registry: Registry, tmp_path: Path) -> None:
    writer = await setup(registry)
    _, data = big_adapter(tmp_path, r=64)
    r = await registry.client.post("/api/v1/adapters/alice/wide/uploads",
                                   json={"size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
                                   headers=registry.auth(writer))
    session = r.json()
    await put_parts(registry, session, data, writer)
    r = await registry.client.delete(f"/api/v1/adapters/alice/wide/uploads/{session['id']}",
                                     headers=registry.auth(writer))
    assert r.status_code == 200
    assert await registry.store.list_multipart_uploads("") == []
    assert await registry.store.list_keys("staging/") == []
    assert await registry.store.list_keys("blobs/") == []


async def open_session(reg: Registry, token: str, data: bytes, *, declare: bool = True) -> dict:
    body = {"size": len(data)} | ({"sha256": hashlib.sha256(data).hexdigest()} if declare else {})
    r = await reg.client.post("/api/v1/adapters/alice/wide/uploads", json=body, headers=reg.auth(token))
    assert r.status_code == 201, r.text
    return r.json()


async def finalize(reg: Registry, token: str, session: dict, parts: list[list], config: bytes,
                   **fields: str) -> httpx.Response:
    return await reg.client.post(session["finalize_url"], headers=reg.auth(token),
                                 files={"adapter_config.json": ("adapter_config.json", io.BytesIO(config))},
                                 data={"parts": json.dumps(parts), "base_model": "meta/wide-llama"} | fields)


def upload_key(reg: Registry, session: dict) -> str:
    """The storage key the session's parts go to, read from the session row's presigned URL."""
    url = session["parts"][0]["url"]
    return httpx.URL(url).path.split("/", 2)[2] if session["direct"] else ""


async def weights_key(reg: Registry, version: int) -> str:
    """The storage key the database records for a version's weights file."""
    engine = create_async_engine(async_url(reg.db_url))
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(
                "SELECT f.storage_key FROM file f JOIN adapter_version v ON v.id = f.version_id "
                "WHERE v.version = :v AND f.filename = 'adapter_model.safetensors'"), {"v": version})).scalar_one()
    finally:
        await engine.dispose()


async def test_the_sha256_may_be_declared_at_finalize(registry: Registry, tmp_path: Path) -> None:
    """A client that hashes while it uploads opens the session with the size only."""
    writer = await setup(registry)
    config, data = big_adapter(tmp_path, r=64)
    sha = hashlib.sha256(data).hexdigest()
    session = await open_session(registry, writer, data, declare=False)
    parts = await put_parts(registry, session, data, writer)
    r = await finalize(registry, writer, session, parts, config)
    assert r.status_code == 422 and "needs the file's sha256" in r.json()["detail"], r.text
    r = await finalize(registry, writer, session, parts, config, sha256="zz")
    assert r.status_code == 400 and "not a sha256" in r.json()["detail"], r.text
    before = await snapshot(registry)
    r = await finalize(registry, writer, session, parts, config, sha256=hashlib.sha256(b"other").hexdigest())
    assert r.status_code == 422 and "not the declared file" in r.json()["detail"], r.text
    assert await snapshot(registry) == before  # the upload is gone, nothing was published
    assert await registry.store.list_multipart_uploads("") == []
    session = await open_session(registry, writer, data, declare=False)
    r = await finalize(registry, writer, session, await put_parts(registry, session, data, writer), config,
                       sha256=sha.upper())
    assert r.status_code == 201, r.text
    assert next(f for f in r.json()["files"] if f["filename"] == "adapter_model.safetensors")["sha256"] == sha


async def test_finalize_may_not_contradict_the_declared_sha256(registry: Registry, tmp_path: Path) -> None:
    writer = await setup(registry)
    config, data = big_adapter(tmp_path, r=64)
    session = await open_session(registry, writer, data)
    parts = await put_parts(registry, session, data, writer)
    r = await finalize(registry, writer, session, parts, config, sha256=hashlib.sha256(b"other").hexdigest())
    assert r.status_code == 422 and "another sha256" in r.json()["detail"], r.text
    r = await finalize(registry, writer, session, parts, config)  # the session is still open
    assert r.status_code == 201, r.text


async def test_s3_parts_go_to_an_upload_blob_key_where_the_blob_stays(s3_registry: Registry,
                                                                      tmp_path: Path) -> None:
    """No server-side copy: the verified upload is the blob and the file row records its key. The same
    bytes pushed again are not stored twice: the second upload is deleted and its version shares the blob."""
    reg = s3_registry
    writer = await setup(reg)
    config, data = big_adapter(tmp_path, r=64)
    sha = hashlib.sha256(data).hexdigest()
    first = await open_session(reg, writer, data, declare=False)
    key = upload_key(reg, first)
    assert key.startswith("blobs/uploads/")
    r = await finalize(reg, writer, first, await put_parts(reg, first, data, writer), config, sha256=sha)
    assert r.status_code == 201, r.text
    assert await weights_key(reg, 1) == key
    assert await reg.store.list_multipart_uploads("") == [] and await reg.store.list_keys("staging/") == []
    again = await open_session(reg, writer, data)
    assert upload_key(reg, again) not in ("", key)
    r = await finalize(reg, writer, again, await put_parts(reg, again, data, writer), config)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2 and await weights_key(reg, 2) == key
    assert await reg.store.list_keys("blobs/uploads/") == [key]
    assert await reg.store.read_range(key, 0, len(data)) == data
    url = next(f["url"] for f in r.json()["files"] if f["filename"] == "adapter_model.safetensors")
    got = await reg.client.get(url, follow_redirects=False)
    assert got.status_code == 302 and key in got.headers["location"]
    assert await reg.store.list_multipart_uploads("") == [] and await reg.store.list_keys("staging/") == []


async def test_s3_concurrent_uploads_of_the_same_bytes_share_one_blob(s3_registry: Registry,
                                                                      tmp_path: Path) -> None:
    """Two open uploads of one file: each lands under its own key, so neither can disturb the other;
    both versions publish and end up on one stored copy."""
    reg = s3_registry
    writer = await setup(reg)
    config, data = big_adapter(tmp_path, r=64)
    one, two = await open_session(reg, writer, data), await open_session(reg, writer, data)
    assert upload_key(reg, one) != upload_key(reg, two)
    parts_two = await put_parts(reg, two, data, writer)
    parts_one = await put_parts(reg, one, data, writer)
    assert (await finalize(reg, writer, one, parts_one, config)).status_code == 201
    assert (await finalize(reg, writer, two, parts_two, config)).status_code == 201
    assert await reg.store.list_keys("blobs/uploads/") == [upload_key(reg, one)]
    assert await weights_key(reg, 1) == await weights_key(reg, 2) == upload_key(reg, one)
    assert await reg.store.list_multipart_uploads("") == []


async def test_s3_a_direct_upload_that_fails_validation_leaves_no_blob(s3_registry: Registry, tmp_path: Path) -> None:
    reg = s3_registry
    writer = await setup(reg)
    _, data = big_adapter(tmp_path, r=64)
    wrong_config = sdk.LoraConfig(r=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]).to_json().encode()
    before = await snapshot(reg)
    session = await open_session(reg, writer, data)
    assert session["direct"] and upload_key(reg, session).startswith("blobs/uploads/")
    r = await finalize(reg, writer, session, await put_parts(reg, session, data, writer), wrong_config)
    assert r.status_code == 422, r.text
    counts, keys = await snapshot(reg)
    assert keys == before[1] and counts["adapter_version"] == before[0]["adapter_version"] == 0
    assert await reg.store.list_multipart_uploads("") == []
