"""Issue 14: the pass that hashes every uploaded byte also refuses NaN/Inf values, naming the tensor,
on every way in (form push, upload session, Hub commit, base-model weights), leaving nothing behind."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import httpx
import torch
from registry_testkit import Registry, put_parts, register_base, saved_adapter, snapshot, tiny_llama
from safetensors.torch import load_file, save

BASE = "meta/llama"
POISONED = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"


def poisoned_adapter(tmp: Path, value: float = float("nan")) -> tuple[bytes, bytes]:
    """(config, weights) of a trained tiny-llama LoRA with one ``value`` in one tensor."""
    folder = saved_adapter(tmp)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    tensors[POISONED][2, 3] = value
    config = json.loads((folder / "adapter_config.json").read_text()) | {"base_model_name_or_path": BASE}
    return json.dumps(config).encode(), save(tensors, metadata={"format": "pt"})


def assert_names_the_tensor(answer: dict, tensor: str = POISONED) -> None:
    assert answer["problems"][0]["tensor"] == tensor, answer
    assert "non-finite" in answer["problems"][0]["message"] and answer["problems"][0]["found"].startswith("1 ")


async def via_push(reg: Registry, token: str, config: bytes, weights: bytes) -> httpx.Response:
    return await reg.client.post("/api/v1/adapters/alice/chat/versions", headers=reg.auth(token),
                                 files={"adapter_config.json": ("adapter_config.json", config),
                                        "adapter_model.safetensors": ("adapter_model.safetensors", weights)})


async def via_session(reg: Registry, token: str, config: bytes, weights: bytes) -> httpx.Response:
    opened = await reg.client.post("/api/v1/adapters/alice/chat/uploads", headers=reg.auth(token),
                                   json={"size": len(weights), "sha256": hashlib.sha256(weights).hexdigest()})
    session = opened.json()
    parts = await put_parts(reg, session, weights, token)
    return await reg.client.post(session["finalize_url"], headers=reg.auth(token),
                                 files={"adapter_config.json": ("adapter_config.json", io.BytesIO(config))},
                                 data={"parts": json.dumps(parts)})


async def via_hub_commit(reg: Registry, token: str, config: bytes, weights: bytes) -> httpx.Response:
    lines = [{"key": "header", "value": {"summary": "nan"}}] + [
        {"key": "file", "value": {"path": path, "encoding": "base64", "content": base64.b64encode(data).decode()}}
        for path, data in (("adapter_config.json", config), ("adapter_model.safetensors", weights))]
    return await reg.client.post("/api/models/alice/chat/commit/main", headers=reg.auth(token),
                                 content="\n".join(json.dumps(line) for line in lines))


async def test_adapters_with_non_finite_values_are_refused(registry: Registry, tmp_path: Path) -> None:
    """NaN through a push, -Inf through an upload session, Inf through a Hub commit."""
    alice = await registry.token("alice", "write")
    await register_base(registry, BASE, tiny_llama(), registry.admin)
    before = await snapshot(registry)
    for send, value in [(via_push, float("nan")), (via_session, float("-inf")), (via_hub_commit, float("inf"))]:
        r = await send(registry, alice, *poisoned_adapter(tmp_path, value))
        assert r.status_code == 422, r.text
        if send is via_hub_commit:  # the Hub's error body: {"error": message}
            assert POISONED in r.json()["error"] and "non-finite" in r.json()["error"]
        else:
            assert_names_the_tensor(r.json())
        assert await snapshot(registry) == before


async def test_base_weights_with_inf_are_refused(registry: Registry) -> None:
    """Direct and through a session: the file is named with the tensor."""
    await register_base(registry, BASE, tiny_llama(), registry.admin)
    tensors = {"model.embed_tokens.weight": torch.zeros(100, 32), "lm_head.weight": torch.ones(100, 32)}
    tensors["lm_head.weight"][99, 31] = float("inf")
    data = save(tensors)
    before = await snapshot(registry)
    r = await registry.client.post(f"/api/v1/base-models/{BASE}/files", headers=registry.auth(registry.admin),
                                   files={"model.safetensors": ("model.safetensors", data)})
    assert r.status_code == 422, r.text
    assert_names_the_tensor(r.json(), "lm_head.weight")
    assert r.json()["problems"][0]["message"].startswith("model.safetensors: ")
    opened = await registry.client.post(f"/api/v1/base-models/{BASE}/uploads", headers=registry.auth(registry.admin),
                                        json={"filename": "model.safetensors", "size": len(data),
                                              "sha256": hashlib.sha256(data).hexdigest()})
    session = opened.json()
    parts = await put_parts(registry, session, data, registry.admin)
    r = await registry.client.post(session["finalize_url"], json={"parts": parts},
                                   headers=registry.auth(registry.admin))
    assert r.status_code == 422, r.text
    assert_names_the_tensor(r.json(), "lm_head.weight")
    assert await snapshot(registry) == before
    assert await registry.store.list_keys("staging/") == []
