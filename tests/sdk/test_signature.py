"""Signatures: same fingerprint from a model and from its config.json; adapter-vs-signature checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _tiny import ConvNet, tiny_gpt2, tiny_llama
from safetensors import safe_open

import sdk
from sdk.signature import Signature, check_adapter, signature_from_config, signature_from_model


def shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_fingerprint_same_from_model_config_and_dtype(make) -> None:  # type: ignore[no-untyped-def]
    model = make()
    sig = signature_from_model(model)
    from_config = signature_from_config(json.loads(model.config.to_json_string()))
    assert from_config.fingerprint == sig.fingerprint
    assert signature_from_model(make().to(torch.bfloat16)).fingerprint == sig.fingerprint
    assert Signature.from_dict(json.loads(json.dumps(sig.to_dict()))) == sig
    kinds = {m.kind for m in sig.modules}
    assert {"Embedding"} <= kinds and (kinds & {"Linear", "Conv1D"})


def test_fingerprint_changes_with_shape_and_wrapping_does_not_matter() -> None:
    a = signature_from_model(tiny_llama()).fingerprint
    assert signature_from_model(tiny_llama(layers=3)).fingerprint != a
    wrapped = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(target_modules="all-linear", modules_to_save=["lm_head"]))
    assert signature_from_model(wrapped.base_model).fingerprint == a


def test_tampered_signature_is_refused() -> None:
    data = signature_from_model(tiny_llama()).to_dict()
    data["modules"][0]["out_features"] = 7
    with pytest.raises(sdk.ConfigError, match="fingerprint"):
        Signature.from_dict(data)


CASES = [
    (tiny_llama, dict(target_modules=["q_proj", "v_proj", "embed_tokens"], rank_pattern={"v_proj": 2})),
    (tiny_llama, dict(target_modules="all-linear", modules_to_save=["lm_head"], bias="all")),
    (tiny_gpt2, dict(target_modules=["c_attn", "c_fc"], bias="lora_only")),
    (ConvNet, dict(target_modules=["conv", "head"], rank_pattern={"head": 2})),
]


@pytest.mark.parametrize(("make", "kw"), CASES)
def test_sdk_adapters_fit_their_signature(tmp_path: Path, make, kw: dict) -> None:  # type: ignore[no-untyped-def]
    cfg = sdk.LoraConfig(r=4, **kw)
    sdk.get_peft_model(make(), cfg).save_pretrained(tmp_path)
    loaded = sdk.config_from_dict(json.loads((tmp_path / "adapter_config.json").read_text()))
    assert check_adapter(signature_from_model(make()), loaded, shapes(tmp_path)) == []


def test_problems_name_tensor_expected_and_found(tmp_path: Path) -> None:
    cfg = sdk.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    sdk.get_peft_model(tiny_llama(), cfg).save_pretrained(tmp_path)
    found = shapes(tmp_path)
    sig = signature_from_model(tiny_llama())
    # wrong rank in the config
    probs = check_adapter(sig, cfg.copy(r=8), found)
    assert probs and all(p.found and p.expected for p in probs)
    assert "r is 4, expected 8" in probs[0].message
    # a model with another hidden size
    other = signature_from_model(tiny_gpt2())
    assert check_adapter(other, cfg, found)[0].message.startswith("Target modules")
    # a tensor for a module that does not exist, and a missing one
    found2 = dict(found)
    found2["base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight"] = (4, 32)
    del found2["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    msgs = [p.message for p in check_adapter(sig, cfg, found2)]
    assert any("maps to no module" in m for m in msgs)
    assert any("is missing" in m for m in msgs)
    # rank too large for the module
    assert "larger than" in check_adapter(sig, cfg.copy(r=64), found)[0].message
