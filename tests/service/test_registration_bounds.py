"""Issue 14: what a writer registers is bounded. A base model's ``config.json`` names a transformers
model class and has bounded sizes (the model is built from it on the meta device); a signature has
at most so many modules; an adapter's description and tags are bounded the same way on a push and
on a PATCH."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_testkit import Registry, push_files, register_base, saved_adapter, tiny_llama

from registry_service.domain.adapters.metadata import MAX_DESCRIPTION_CHARS, MAX_TAGS
from registry_service.domain.base_models import service as base_models


def llama_config(**changes: object) -> dict:
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2).to_dict()
    return config | {"architectures": ["LlamaForCausalLM"]} | changes


async def register(reg: Registry, config: dict) -> tuple[int, str]:
    r = await reg.client.post("/api/v1/base-models", json={"name": "meta/m", "config": config},
                              headers=reg.auth(reg.admin))
    return r.status_code, r.json().get("detail", "")


async def test_architectures_must_name_a_model_class(registry_with) -> None:
    """Main called whatever transformers attribute ``architectures[0]`` named (``set_seed(config)``)."""
    reg = await registry_with()
    for architecture in ["set_seed", "AutoModel", "LlamaConfig", "PreTrainedModel", "__class__", "os.system"]:
        status, detail = await register(reg, llama_config(architectures=[architecture]))
        assert status == 400, detail
        assert "is not a model class of transformers" in detail and architecture[:20] in detail


async def test_config_sizes_are_bounded(registry_with) -> None:
    """Sizes past the bounds are refused before the model is built (main built a 1,000,000-layer model
    on the meta device, using gigabytes); a config within them still registers."""
    reg = await registry_with()
    for changes, named in [
        ({"num_hidden_layers": 1_000_000}, "config.num_hidden_layers = 1000000: at most 1024 layers"),
        ({"hidden_size": 10**30}, "config.hidden_size"),
        ({"num_hidden_layers": 128, "num_local_experts": 1024}, "128 layers × 1024 experts"),
        ({"text_config": {"num_hidden_layers": 5000}}, "config.text_config.num_hidden_layers"),
    ]:
        status, detail = await register(reg, llama_config(**changes))
        assert status == 400, detail
        assert named in detail
    assert (await register(reg, llama_config()))[0] == 201


async def test_signatures_have_a_bounded_number_of_modules(registry_with, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = await registry_with()
    monkeypatch.setattr(base_models, "MAX_SIGNATURE_MODULES", 5)
    from sdk.signature import signature_from_model

    r = await reg.client.post("/api/v1/base-models", headers=reg.auth(reg.admin),
                              json={"name": "meta/llama", "signature": signature_from_model(tiny_llama()).to_dict()})
    assert r.status_code == 400 and "at most 5" in r.json()["detail"], r.text
    status, detail = await register(reg, llama_config())
    assert status == 400 and "at most 5" in detail


async def test_description_and_tags_are_bounded_on_push_and_patch(registry_with, tmp_path: Path) -> None:
    """A 50 MiB description (main stored it) and too many tags: refused on a push and on a PATCH."""
    reg = await registry_with()
    alice = await reg.token("alice", "write")
    await register_base(reg, "meta/llama", tiny_llama(), reg.admin)
    folder = saved_adapter(tmp_path)
    url = "/api/v1/adapters/alice/chat"
    for fields in [{"description": "x" * (50 * 2**20)}, {"description": "x" * (MAX_DESCRIPTION_CHARS + 1)},
                   {"tags": ",".join(f"t{i}" for i in range(MAX_TAGS + 1))}]:
        r = await reg.client.post(f"{url}/versions", files=push_files(folder), headers=reg.auth(alice),
                                  data={"base_model": "meta/llama"} | fields)
        assert r.status_code == 422, r.text
        assert r.json()["problems"][0]["expected"] in (f"<= {MAX_DESCRIPTION_CHARS} characters", f"<= {MAX_TAGS} tags")
    ok = await reg.client.post(f"{url}/versions", files=push_files(folder), headers=reg.auth(alice),
                               data={"base_model": "meta/llama", "description": "x" * MAX_DESCRIPTION_CHARS,
                                     "tags": ",".join(f"t{i}" for i in range(MAX_TAGS))})
    assert ok.status_code == 201, ok.text
    for body in [{"description": "y" * (MAX_DESCRIPTION_CHARS + 1)}, {"tags": [f"u{i}" for i in range(MAX_TAGS + 1)]},
                 {"tags": ["z" * 65]}, {"description": "nul \x00"}]:
        r = await reg.client.patch(url, json=body, headers=reg.auth(alice))  # the PATCH body's declared bounds
        assert r.status_code == 400, (body, r.text)
        assert next(iter(body)) in r.text or "NUL" in r.text
    big = await reg.client.patch(url, json={"description": "y" * (8 * 2**20)}, headers=reg.auth(alice))
    assert big.status_code == 413, big.text
    kept = (await reg.client.get(url)).json()
    assert kept["description"] == "x" * MAX_DESCRIPTION_CHARS and len(kept["tags"]) == MAX_TAGS
