"""Large files: multipart upload sessions (straight to S3 via presigned URLs), then finalize."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import httpx
import torch
from registry_testkit import Registry, snapshot
from safetensors.torch import save_file

import sdk

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


async def put_parts(reg: Registry, session: dict, data: bytes, token: str) -> list[list]:
    parts = []
    async with httpx.AsyncClient() as direct:
        for p in session["parts"]:
            start = (p["part_number"] - 1) * session["part_size"]
            chunk = data[start : start + session["part_size"]]
            if session["direct"]:
                r = await direct.put(p["url"], content=chunk)
            else:
                r = await reg.client.put(p["url"], content=chunk, headers=reg.auth(token))
            assert r.status_code == 200, r.text
            parts.append([p["part_number"], r.headers["etag"]])
    return parts


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
    assert await registry.store.list_multipart_uploads() == []
    assert await registry.store.list_keys("staging/") == []
