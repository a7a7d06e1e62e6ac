"""Saving and loading in PEFT's format; strict, all-or-nothing loading; no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _tiny import ids, tiny_gpt2, tiny_llama
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import sdk


def saved(tmp_path: Path, **kw: object) -> tuple[Path, torch.Tensor]:
    cfg = sdk.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **kw)
    m = sdk.get_peft_model(tiny_llama(), cfg).eval()
    m.add_adapter("second", sdk.LoraConfig(r=2, target_modules=["o_proj"], init_lora_weights=False))
    m.save_pretrained(tmp_path)
    with torch.no_grad():
        return tmp_path, m(input_ids=ids()).logits


def test_layout_keys_and_metadata(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "adapter_config.json",
                                                      "adapter_model.safetensors", "second"]
    assert (path / "second" / "adapter_model.safetensors").is_file()
    with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert all(".default." not in k for k in keys)
    tensors = load_file(str(path / "adapter_model.safetensors"))
    assert tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"].shape == (4, 32)
    assert tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"].shape == (16, 4)
    cfg = json.loads((path / "adapter_config.json").read_text())
    assert cfg["inference_mode"] is True and cfg["peft_type"] == "LORA"
    assert list(cfg) == sorted(cfg)


def test_round_trip(tmp_path: Path) -> None:
    path, out = saved(tmp_path)
    m = sdk.AdapterModel.from_pretrained(tiny_llama(), path)
    assert not m.training
    assert not any(p.requires_grad for p in m.parameters())
    with torch.no_grad():
        torch.testing.assert_close(m(input_ids=ids()).logits, out)
    m.load_adapter(path / "second", "second")
    assert m.active_adapters == ["default"]
    trainable = sdk.AdapterModel.from_pretrained(tiny_llama(), path, is_trainable=True)
    assert trainable.get_nb_trainable_parameters()[0] > 0


def test_modules_to_save_and_embedding_keys(tmp_path: Path) -> None:
    m = sdk.get_peft_model(tiny_gpt2(), sdk.LoraConfig(r=2, target_modules=["c_attn", "wpe"],
                                                       modules_to_save=["ln_f"]))
    m.save_pretrained(tmp_path)
    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert "base_model.model.transformer.ln_f.weight" in keys
    assert "base_model.model.transformer.wpe.lora_embedding_A" in keys
    assert json.loads((tmp_path / "adapter_config.json").read_text())["fan_in_fan_out"] is True


def test_pickle_is_refused_with_a_fix(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    (path / "adapter_model.safetensors").unlink()
    (path / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(sdk.PickleRefusedError, match=r"never reads it.*safetensors"):
        sdk.AdapterModel.from_pretrained(tiny_llama(), path)


def _tamper(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    f = path / "adapter_model.safetensors"
    tensors = load_file(str(f))
    change(tensors)
    save_file(tensors, str(f), metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.pop("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"), "missing from the file"),
        (lambda t: t.__setitem__("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                                 torch.zeros(8, 32)), r"shape \(8, 32\) in the file, the model expects \(4, 32\)"),
        (lambda t: t.__setitem__("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight",
                                 torch.zeros(4, 32)), "matches no module"),
    ],
)
def test_mismatched_files_fail_cleanly(tmp_path: Path, change, match: str) -> None:  # type: ignore[no-untyped-def]
    path, _ = saved(tmp_path)
    _tamper(path, change)
    with pytest.raises(sdk.FormatError, match=match):
        sdk.AdapterModel.from_pretrained(tiny_llama(), path)
    # load_adapter into an existing model leaves nothing half-loaded behind
    m = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(r=2, target_modules=["k_proj"]))
    with pytest.raises(sdk.FormatError):
        m.load_adapter(path, "broken")
    assert m.adapter_names == ["default"]
    assert all("broken" not in n for n, _ in m.named_parameters())
    assert type(m.base_model.model.layers[0].self_attn.q_proj).__name__ == "Linear"


def test_bad_config_files(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    (path / "adapter_config.json").write_text("{not json")
    with pytest.raises(sdk.ConfigError, match="not valid JSON"):
        sdk.AdapterModel.from_pretrained(tiny_llama(), path)
    (path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    with pytest.raises(sdk.ConfigError, match="peft_type"):
        sdk.AdapterModel.from_pretrained(tiny_llama(), path)
    (path / "adapter_model.safetensors").write_bytes(b"\xff" * 20)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "target_modules": ["q_proj"]}))
    with pytest.raises(sdk.FormatError, match="not a readable safetensors"):
        sdk.AdapterModel.from_pretrained(tiny_llama(), path)
