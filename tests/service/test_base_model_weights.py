"""Base-model weights: direct and session uploads checked against the signature, listing, downloads."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from registry_testkit import Registry, put_parts, register_base, snapshot, tiny_llama
from safetensors.torch import save, save_model

from sdk.signature import signature_from_model

BASE = "meta/llama-tiny"
ROOT = f"/api/v1/base-models/{BASE}"
MiB = 1 << 20


def state_dict() -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tiny_llama().state_dict().items()}


def weights_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return save(tensors, metadata={"format": "pt"})


def form(**files: bytes) -> list[tuple[str, tuple[str, io.BytesIO, str]]]:
    return [("files", (name, io.BytesIO(data), "application/octet-stream")) for name, data in files.items()]


async def weight_rows(reg: Registry) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from registry_service.db.session import async_url

    engine = create_async_engine(async_url(reg.db_url))
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT count(*) FROM base_model_file"))).scalar_one()
    finally:
        await engine.dispose()


async def everything(reg: Registry) -> tuple[Any, int]:
    """What a refused upload must leave unchanged: rows of every table, blob keys, weights rows."""
    return await snapshot(reg), await weight_rows(reg)


async def setup(reg: Registry) -> str:
    writer = await reg.token("meta", "write")
    body = await register_base(reg, BASE, tiny_llama(), writer)
    assert body["has_weights"] is False and body["files"] == []
    return writer


async def download(reg: Registry, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    r = await reg.client.get(url, headers=headers or {}, follow_redirects=False)
    if r.status_code == 302:  # S3: a presigned URL
        async with httpx.AsyncClient() as plain:
            r = await plain.get(r.headers["location"], headers=headers or {})
    return r


async def test_upload_list_download(registry: Registry, tmp_path: Path) -> None:
    writer = await setup(registry)
    path = tmp_path / "model.safetensors"
    save_model(tiny_llama(), str(path))
    data = path.read_bytes()
    r = await registry.client.post(f"{ROOT}/files", files=form(**{"model.safetensors": data}),
                                   headers=registry.auth(writer))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["has_weights"] is True and body["added"] == ["model.safetensors"]
    [f] = body["files"]
    assert f["filename"] == "model.safetensors" and f["size"] == len(data)
    assert f["sha256"] == hashlib.sha256(data).hexdigest()

    listed = (await registry.client.get(f"{ROOT}/files")).json()["items"]
    assert listed == body["files"]
    info = (await registry.client.get(ROOT)).json()
    assert info["has_weights"] is True and info["files"] == listed and "signature" in info
    [item] = (await registry.client.get("/api/v1/base-models")).json()["items"]
    assert item["has_weights"] is True and item["files"] == listed

    got = await download(registry, f["url"])
    assert got.status_code == 200 and got.content == data
    part = await registry.client.get(f["url"] + "?stream=1", headers={"Range": "bytes=8-99"})
    assert part.status_code == 206 and part.content == data[8:100]
    if registry.settings.uses_s3:
        assert (await registry.client.get(f["url"], follow_redirects=False)).status_code == 302
    paths = (await registry.client.get("/schema/openapi.json")).json()["paths"]
    assert {"/api/v1/base-models/{ns}/{name}/files", "/api/v1/base-models/{ns}/{name}/uploads"} <= set(paths)
    missing = await registry.client.get(f"{ROOT}/files/other.safetensors")
    assert missing.status_code == 404

    # the same bytes again change nothing; other bytes under the same name are refused
    again = await registry.client.post(f"{ROOT}/files", files=form(**{"model.safetensors": data}),
                                       headers=registry.auth(writer))
    assert again.status_code == 200 and again.json()["added"] == []
    before = await everything(registry)
    other = state_dict()
    other["model.norm.weight"] = other["model.norm.weight"] + 1
    r = await registry.client.post(f"{ROOT}/files", files=form(**{"model.safetensors": weights_bytes(other)}),
                                   headers=registry.auth(writer))
    assert r.status_code == 409, r.text
    assert await everything(registry) == before


def _wrong_shape() -> tuple[str, bytes]:
    sd = state_dict()
    sd["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(16, 32)
    return "model.safetensors", weights_bytes(sd)


def _unknown_tensor() -> tuple[str, bytes]:
    sd = state_dict()
    sd["model.layers.0.self_attn.q_proj.lora_A"] = torch.zeros(4, 32)
    return "model.safetensors", weights_bytes(sd)


def _int_dtype() -> tuple[str, bytes]:
    sd = state_dict()
    sd["model.embed_tokens.weight"] = torch.zeros(100, 32, dtype=torch.int32)
    return "model.safetensors", weights_bytes(sd)


def _pickle() -> tuple[str, bytes]:
    buf = io.BytesIO()
    torch.save(state_dict(), buf)
    return "pytorch_model.bin", buf.getvalue()


def _not_safetensors() -> tuple[str, bytes]:
    return "model.safetensors", b"\xff" * 64


def _other_model() -> tuple[str, bytes]:
    return "model.safetensors", weights_bytes({"transformer.wte.weight": torch.zeros(100, 32)})


@pytest.mark.parametrize(("make", "tensor", "expected", "found", "words"), [
    (_wrong_shape, "model.layers.0.self_attn.q_proj.weight", "[32, 32]", "[16, 32]", "shape [16, 32]"),
    (_unknown_tensor, "model.layers.0.self_attn.q_proj.lora_A", None, "[4, 32]", "has no parameter 'lora_A'"),
    (_int_dtype, "model.embed_tokens.weight", None, "I32", "floating point"),
    (_pickle, None, "*.safetensors", "pytorch_model.bin", "never loads pickles"),
    (_not_safetensors, None, None, None, "header"),
    (_other_model, "transformer.wte.weight", None, "[100, 32]", "maps to no module"),
])
async def test_refused_uploads_leave_nothing(registry: Registry, make: Any, tensor: str | None,
                                             expected: str | None, found: str | None, words: str) -> None:
    writer = await setup(registry)
    filename, data = make()
    before = await everything(registry)
    r = await registry.client.post(f"{ROOT}/files", files=form(**{filename: data}), headers=registry.auth(writer))
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert problems and all(set(p) == {"tensor", "expected", "found", "message"} for p in problems)
    hit = [p for p in problems if words in p["message"]]
    assert hit, problems
    if tensor is not None or found is not None:
        assert any(p["tensor"] == tensor and p["found"] == found and (expected is None or p["expected"] == expected)
                   for p in hit), hit
    assert await everything(registry) == before
    assert (await registry.client.get(ROOT)).json()["has_weights"] is False


async def test_auth(registry: Registry) -> None:
    await setup(registry)
    data = weights_bytes(state_dict())
    other = await registry.token("someone", "write")
    reader = await registry.token("meta", "read")
    for headers, status in [({}, 401), (registry.auth(other), 403), (registry.auth(reader), 403),
                            (registry.auth("nope"), 401)]:
        r = await registry.client.post(f"{ROOT}/files", files=form(**{"model.safetensors": data}), headers=headers)
        assert r.status_code == status, r.text
        r = await registry.client.post(f"{ROOT}/uploads", headers=headers,
                                       json={"filename": "model.safetensors", "size": len(data),
                                             "sha256": hashlib.sha256(data).hexdigest()})
        assert r.status_code == status, r.text
    assert await weight_rows(registry) == 0
    r = await registry.client.post("/api/v1/base-models/meta/unknown/files", headers=registry.auth(registry.admin),
                                   files=form(**{"model.safetensors": data}))
    assert r.status_code == 404


async def test_sharded_checkpoint(registry: Registry) -> None:
    writer = await setup(registry)
    sd = state_dict()
    keys = sorted(sd)
    first, second = {k: sd[k] for k in keys[:10]}, {k: sd[k] for k in keys[10:]}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    r = await registry.client.post(f"{ROOT}/files", files=form(**{names[0]: weights_bytes(first)}),
                                   headers=registry.auth(writer))
    assert r.status_code == 201, r.text

    # a tensor of the first shard again, in a second file: refused, nothing kept
    before = await everything(registry)
    clash = {keys[0]: sd[keys[0]], **second}
    r = await registry.client.post(f"{ROOT}/files", files=form(**{names[1]: weights_bytes(clash)}),
                                   headers=registry.auth(writer))
    assert r.status_code == 422, r.text
    assert [p["tensor"] for p in r.json()["problems"]] == [keys[0]]
    assert await everything(registry) == before

    r = await registry.client.post(f"{ROOT}/files", files=form(**{names[1]: weights_bytes(second)}),
                                   headers=registry.auth(writer))
    assert r.status_code == 201, r.text
    files = r.json()["files"]
    assert [f["filename"] for f in files] == names
    got: dict[str, torch.Tensor] = {}
    for f in files:
        from safetensors.torch import load

        got |= load((await download(registry, f["url"])).content)
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


async def test_two_files_in_one_request_must_not_overlap(registry: Registry) -> None:
    writer = await setup(registry)
    sd = state_dict()
    before = await everything(registry)
    r = await registry.client.post(f"{ROOT}/files", headers=registry.auth(writer),
                                   files=form(**{"a.safetensors": weights_bytes(sd), "b.safetensors": weights_bytes(
                                       {"model.norm.weight": sd["model.norm.weight"]})}))
    assert r.status_code == 422, r.text
    assert [p["tensor"] for p in r.json()["problems"]] == ["model.norm.weight"]
    assert await everything(registry) == before


# --- upload sessions ------------------------------------------------------------------------------


WIDE = "meta/llama-wide"
WIDE_ROOT = f"/api/v1/base-models/{WIDE}"


def wide_model() -> torch.nn.Module:
    """A Llama whose fp32 weights are ~17 MiB: several 5 MiB parts (the test settings' part size)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=1024,
                                             num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4))
    return model


def wide_weights(**replace: torch.Tensor) -> bytes:
    sig = signature_from_model(wide_model())
    g = torch.Generator().manual_seed(0)
    tensors = {f"{m.path}.{p}": torch.randn(shape, generator=g) for m in sig.modules for p, shape in m.params.items()}
    return weights_bytes(tensors | replace)


async def setup_wide(reg: Registry) -> str:
    writer = await reg.token("meta", "write")
    await register_base(reg, WIDE, wide_model(), writer)
    return writer


async def open_session(reg: Registry, writer: str, data: bytes, sha: str | None = None,
                       filename: str = "model.safetensors") -> dict:
    r = await reg.client.post(f"{WIDE_ROOT}/uploads", headers=reg.auth(writer),
                              json={"filename": filename, "size": len(data),
                                    "sha256": sha or hashlib.sha256(data).hexdigest()})
    assert r.status_code == 201, r.text
    return r.json()


async def nothing_staged(reg: Registry) -> bool:
    return await reg.store.list_keys("staging/") == [] and await reg.store.list_multipart_uploads() == []


async def test_session_upload(registry: Registry) -> None:
    writer = await setup_wide(registry)
    data = wide_weights()
    assert len(data) > 15 * MiB
    session = await open_session(registry, writer, data)
    assert len(session["parts"]) == 4 and session["direct"] == registry.settings.uses_s3
    parts = await put_parts(registry, session, data, writer)
    r = await registry.client.post(session["finalize_url"], json={"parts": parts}, headers=registry.auth(writer))
    assert r.status_code == 201, r.text
    [f] = r.json()["files"]
    assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["size"] == len(data)
    got = await download(registry, f["url"], {"Range": f"bytes={len(data) - 100}-"})
    assert got.status_code == 206 and got.content == data[-100:]
    assert await nothing_staged(registry)
    again = await registry.client.post(session["finalize_url"], json={"parts": parts}, headers=registry.auth(writer))
    assert again.status_code == 400  # the session is done

    # a different file under the stored name is refused before any byte is sent
    r = await registry.client.post(f"{WIDE_ROOT}/uploads", headers=registry.auth(writer),
                                   json={"filename": "model.safetensors", "size": 100, "sha256": "0" * 64})
    assert r.status_code == 409, r.text


async def test_session_refusals_leave_nothing(registry: Registry) -> None:
    writer = await setup_wide(registry)
    before = await everything(registry)
    # bytes that are not the declared file
    data = wide_weights()
    session = await open_session(registry, writer, data, sha=hashlib.sha256(b"other").hexdigest())
    parts = await put_parts(registry, session, data, writer)
    r = await registry.client.post(session["finalize_url"], json={"parts": parts}, headers=registry.auth(writer))
    assert r.status_code == 422 and "not the declared file" in r.json()["detail"], r.text
    # a tensor of the wrong shape, found from the header of the staged upload
    bad = wide_weights(**{"model.layers.3.mlp.down_proj.weight": torch.zeros(256, 1000)})
    session = await open_session(registry, writer, bad)
    parts = await put_parts(registry, session, bad, writer)
    r = await registry.client.post(session["finalize_url"], json={"parts": parts}, headers=registry.auth(writer))
    assert r.status_code == 422, r.text
    assert r.json()["problems"] == [{"tensor": "model.layers.3.mlp.down_proj.weight", "expected": "[256, 1024]",
                                     "found": "[256, 1000]", "message": "model.safetensors: model.layers.3.mlp."
                                     "down_proj.weight has shape [256, 1000], the base model's is [256, 1024]"}]
    # an abandoned upload
    session = await open_session(registry, writer, data, filename="other.safetensors")
    await put_parts(registry, session, data, writer)
    r = await registry.client.delete(f"{WIDE_ROOT}/uploads/{session['id']}", headers=registry.auth(writer))
    assert r.status_code == 200
    assert await everything(registry) == before
    assert await nothing_staged(registry)
    # pickles and other names are refused when the session opens
    r = await registry.client.post(f"{WIDE_ROOT}/uploads", headers=registry.auth(writer),
                                   json={"filename": "pytorch_model.bin", "size": 100, "sha256": "0" * 64})
    assert r.status_code == 422 and "pickle" in r.text
