"""LoraConfig: JSON round trip, tolerance of unknown keys, refusal of unsupported math."""

from __future__ import annotations

import json
import warnings

import pytest

import sdk
from sdk.config import UnknownConfigKeyWarning


def test_round_trip_keeps_every_field() -> None:
    cfg = sdk.LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 2},
        alpha_pattern={"q_proj": 4}, use_rslora=True, modules_to_save=["lm_head"], bias="lora_only",
    )
    data = json.loads(cfg.to_json())
    assert data["peft_type"] == "LORA"
    assert data["target_modules"] == ["q_proj", "v_proj"]
    back = sdk.config_from_dict(data)
    assert back == cfg
    assert back.rank_for("model.layers.0.self_attn.v_proj") == 2
    assert back.rank_for("model.layers.0.self_attn.q_proj") == 4
    assert back.scaling_for("model.layers.0.self_attn.q_proj") == pytest.approx(4 / 4**0.5)


def test_sets_become_sorted_lists() -> None:
    cfg = sdk.LoraConfig(target_modules={"v_proj", "q_proj"})
    assert json.loads(cfg.to_json())["target_modules"] == ["q_proj", "v_proj"]


def test_unknown_keys_warn_and_survive_a_round_trip() -> None:
    data = {"peft_type": "LORA", "r": 4, "shiny_new_option": {"x": 1}, "peft_version": "9.9"}
    with pytest.warns(UnknownConfigKeyWarning, match="shiny_new_option"):
        cfg = sdk.config_from_dict(data)
    assert json.loads(cfg.to_json())["shiny_new_option"] == {"x": 1}


def test_known_harmless_keys_do_not_warn() -> None:
    data = {"peft_type": "LORA", "r": 4, "peft_version": "0.21.2", "loftq_config": {}, "megatron_core": "m",
            "use_dora": False, "layer_replication": None, "lora_bias": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdk.config_from_dict(data)


@pytest.mark.parametrize(
    ("key", "value"),
    [("lora_bias", True), ("layer_replication", [[0, 2]]), ("use_qalora", True),
     ("target_parameters", ["experts.w1"]), ("trainable_token_indices", [1, 2])],
)
def test_math_changing_features_are_refused(key: str, value: object) -> None:
    with pytest.raises(sdk.ConfigError, match=key):
        sdk.config_from_dict({"peft_type": "LORA", "r": 4, key: value})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"r": 0}, "positive"),
        ({"r": -3}, "positive"),
        ({"rank_pattern": {"q_proj": 0}}, "rank_pattern"),
        ({"bias": "some"}, "bias"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"init_lora_weights": "pissa"}, "PiSSA"),
        ({"target_modules": "q_proj|v_proj", "layers_to_transform": [0]}, "layers_to_transform"),
        ({"layers_pattern": "layers"}, "layers_to_transform"),
        ({"target_modules": []}, "empty"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(sdk.ConfigError, match=match):
        sdk.LoraConfig(**kwargs)


def test_unknown_method_and_wrong_type() -> None:
    with pytest.raises(sdk.ConfigError, match="unknown adapter method"):
        sdk.config_from_dict({"peft_type": "NOT_A_METHOD"})
    with pytest.raises(sdk.ConfigError, match="JSON object"):
        sdk.LoraConfig.from_dict(["r", 4])  # type: ignore[arg-type]


def test_registry_lists_lora() -> None:
    assert "LORA" in sdk.registered_methods()
    assert sdk.get_method("lora").config_cls is sdk.LoraConfig
