"""Which modules a config selects, and the errors when it selects nothing sensible."""

from __future__ import annotations

import pytest
from _tiny import ConvNet, tiny_gpt2, tiny_llama

import sdk
from sdk.layers import iter_adapter_modules


def adapted(model: sdk.AdapterModel) -> set[str]:
    return {p for p, m in iter_adapter_modules(model.base_model) if type(m).__name__.startswith("Lora")}


def test_suffix_list() -> None:
    m = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(target_modules=["q_proj", "down_proj"]))
    assert adapted(m) == {f"model.layers.{i}.{s}" for i in (0, 1) for s in ("self_attn.q_proj", "mlp.down_proj")}


def test_regex_is_full_match() -> None:
    m = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(target_modules=r".*\.1\.self_attn\.(k|v)_proj"))
    assert adapted(m) == {"model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.v_proj"}


def test_all_linear_skips_the_output_head() -> None:
    m = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(target_modules="all-linear"))
    got = adapted(m)
    assert "lm_head" not in got
    assert len(got) == 2 * 7  # q k v o gate up down in each of 2 layers


def test_default_targets_by_architecture() -> None:
    assert {p.rsplit(".", 1)[-1] for p in adapted(sdk.get_peft_model(tiny_llama(), sdk.LoraConfig()))} == {
        "q_proj", "v_proj"}
    assert {p.rsplit(".", 1)[-1] for p in adapted(sdk.get_peft_model(tiny_gpt2(), sdk.LoraConfig()))} == {"c_attn"}


def test_layers_to_transform_and_exclude() -> None:
    m = sdk.get_peft_model(
        tiny_llama(layers=3),
        sdk.LoraConfig(target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 2], layers_pattern="layers",
                       exclude_modules=["model.layers.2.self_attn.v_proj"]),
    )
    assert adapted(m) == {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                          "model.layers.2.self_attn.q_proj"}


def test_not_found_suggests_close_names() -> None:
    with pytest.raises(sdk.TargetModulesNotFoundError, match=r"q_prj.*did you mean 'q_proj'"):
        sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(target_modules=["q_prj"]))


def test_no_default_for_unknown_architecture() -> None:
    with pytest.raises(sdk.TargetModulesNotFoundError, match="target_modules is not set"):
        sdk.get_peft_model(ConvNet(), sdk.LoraConfig())


def test_unsupported_layer_type_is_named() -> None:
    with pytest.raises(sdk.UnsupportedLayerError, match=r"norm.*LayerNorm.*not supported"):
        sdk.get_peft_model(ConvNet(), sdk.LoraConfig(target_modules=["norm"]))
    with pytest.raises(sdk.UnsupportedLayerError, match=r"grouped.*groups"):
        sdk.get_peft_model(ConvNet(), sdk.LoraConfig(target_modules=["grouped"]))


def test_rank_larger_than_layer_is_refused_and_model_untouched() -> None:
    base = ConvNet()
    with pytest.raises(sdk.TargetingError, match=r"head: r=6 is larger than min\(in, out\)=4"):
        sdk.get_peft_model(base, sdk.LoraConfig(r=6, target_modules=["conv", "head"]))
    assert type(base.conv).__name__ == "Conv2d"  # nothing was injected


def test_rank_pattern_can_fix_a_small_layer() -> None:
    m = sdk.get_peft_model(ConvNet(), sdk.LoraConfig(r=6, target_modules=["conv", "head"], rank_pattern={"head": 2}))
    assert m.base_model.head.lora_A["default"].shape == (2, 8)
    assert m.base_model.conv.lora_A["default"].shape == (6, 3, 3, 3)


def test_modules_to_save_not_found() -> None:
    with pytest.raises(sdk.TargetModulesNotFoundError, match=r"modules_to_save \['lm_haed'\].*lm_head"):
        sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(target_modules=["q_proj"], modules_to_save=["lm_haed"]))
