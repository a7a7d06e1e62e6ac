"""(IA)³ specifics: PEFT's vector shapes, feed-forward defaults, mixed batches, multiplicative merges."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import peft
import pytest
import torch
from _tiny import ConvNet, ids, tiny_gpt2, tiny_llama
from safetensors.torch import load_file

import sdk
from sdk.signature import check_adapter, signature_from_model

LLAMA = {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}


@torch.no_grad()
def _logits(model: torch.nn.Module, **kw: object) -> torch.Tensor:
    return model(input_ids=ids(), **kw).logits


def _random(model: sdk.AdapterModel, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))


def test_saved_shapes_follow_peft(tmp_path: Path) -> None:
    model = sdk.get_peft_model(tiny_gpt2(), sdk.IA3Config(target_modules=["c_attn", "mlp.c_proj"],
                                                           feedforward_modules=["mlp.c_proj"]))
    model.save_pretrained(tmp_path)
    shapes = {k: tuple(v.shape) for k, v in load_file(tmp_path / "adapter_model.safetensors").items()}
    assert shapes["base_model.model.transformer.h.0.attn.c_attn.ia3_l"] == (96, 1)  # out×1: output scaling
    assert shapes["base_model.model.transformer.h.0.mlp.c_proj.ia3_l"] == (1, 128)  # 1×in: input scaling
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["fan_in_fan_out"] is True and saved["peft_type"] == "IA3"
    assert all(float(v.sum()) == v.numel() for v in load_file(tmp_path / "adapter_model.safetensors").values())


def test_defaults_follow_peft_and_unknown_architectures_need_feedforward_modules() -> None:
    model = sdk.get_peft_model(tiny_llama(), sdk.IA3Config())
    cfg = model.peft_config["default"]
    assert sorted(cfg.target_modules) == ["down_proj", "k_proj", "v_proj"] and cfg.feedforward_modules == ["down_proj"]
    with pytest.raises(sdk.ConfigError, match="feedforward_modules is not set"):
        sdk.get_peft_model(ConvNet(), sdk.IA3Config(target_modules=["head"]))
    with pytest.raises(sdk.ConfigError, match="subset of `target_modules`"):
        sdk.IA3Config(target_modules=["k_proj"], feedforward_modules=["down_proj"])


def test_conv2d_matches_peft_and_grouped_conv_is_refused(tmp_path: Path) -> None:
    model = sdk.get_peft_model(ConvNet(), sdk.IA3Config(target_modules=["conv", "head"], feedforward_modules=["head"]))
    _random(model, 0)
    x = torch.randn(2, 3, 8, 8)
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(ConvNet(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), atol=1e-6, rtol=1e-6)
    with pytest.raises(sdk.UnsupportedLayerError, match="grouped Conv2d"):
        sdk.get_peft_model(ConvNet(), sdk.IA3Config(target_modules=["grouped"], feedforward_modules=[]))


def test_two_adapters_multiply_mix_per_sample_and_merge_back() -> None:
    model = sdk.get_peft_model(tiny_llama(), sdk.IA3Config(**LLAMA))
    model.add_adapter("other", sdk.IA3Config(**LLAMA))
    _random(model, 1)
    model.set_adapter("other")
    _random(model, 2)
    model.eval()
    base = _logits(tiny_llama())
    outs = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        outs[name] = _logits(model)
    mixed = _logits(model, adapter_names=["other", "__base__", "default"])
    torch.testing.assert_close(mixed[0], outs["other"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[1], base[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[2], outs["default"][2], atol=1e-5, rtol=1e-5)

    model.set_adapter(["default", "other"])
    both = _logits(model)
    assert (both - outs["default"]).abs().max() > 1e-3
    weights = {n: p.clone() for n, p in model.base_model.named_parameters() if not p.requires_grad}
    model.merge_adapter()
    torch.testing.assert_close(_logits(model), both, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    for n, p in model.base_model.named_parameters():
        if n in weights:
            torch.testing.assert_close(p, weights[n], atol=1e-6, rtol=1e-5)


def test_safe_merge_refuses_a_zero_entry() -> None:
    model = sdk.get_peft_model(tiny_llama(), sdk.IA3Config(**LLAMA))
    layer = model.base_model.model.layers[0].self_attn.k_proj
    with torch.no_grad():
        layer.ia3_l["default"][3, 0] = 0.0
    before = layer.base_layer.weight.clone()
    with pytest.raises(sdk.MergeError, match="could not be undone"):
        model.merge_adapter(safe_merge=True)
    assert torch.equal(layer.base_layer.weight, before)


def test_signature_check_names_wrong_vector_shapes(tmp_path: Path) -> None:
    model = sdk.get_peft_model(tiny_llama(), sdk.IA3Config(**LLAMA))
    model.save_pretrained(tmp_path)
    shapes = {k: tuple(v.shape) for k, v in load_file(tmp_path / "adapter_model.safetensors").items()}
    sig = signature_from_model(tiny_llama())
    cfg = model.peft_config["default"]
    assert check_adapter(sig, cfg, shapes) == []
    key = "base_model.model.model.layers.0.mlp.down_proj.ia3_l"
    problems = check_adapter(sig, cfg, {**shapes, key: (64, 1)})
    assert [p.tensor for p in problems] == [key] and "expected [1, 64]" not in problems[0].message
    assert problems[0].expected == "[1, 64]" and problems[0].found == "[64, 1]"
