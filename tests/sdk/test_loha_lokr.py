"""LoHa and LoKr specifics: PEFT's factor shapes, Conv2d (plain and effective), factorisation,
dropouts, mixed batches, unsupported layers and config checks."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from _tiny import ConvNet, ids, tiny_gpt2, tiny_llama
from safetensors.torch import load_file

import sdk
from sdk.signature import check_adapter, signature_from_model
from sdk.tuners.lokr import factorization

CONV_CASES = [
    ("LOHA", {"r": 2, "target_modules": ["conv", "grouped", "head"]}),
    ("LOHA", {"r": 2, "target_modules": ["conv", "grouped"], "use_effective_conv2d": True}),
    ("LOKR", {"r": 1, "target_modules": ["conv", "grouped", "head"]}),
    ("LOKR", {"r": 1, "target_modules": ["conv"], "use_effective_conv2d": True, "decompose_both": True}),
    ("LOKR", {"r": 8, "target_modules": ["conv", "head"]}),  # full W2 (r large)
]


def _config(method: str, **kw: Any) -> Any:
    return sdk.get_method(method).config_cls(**kw)


@pytest.mark.parametrize(("method", "kw"), CONV_CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CONV_CASES)])
def test_conv_and_linear_match_peft_both_ways(method: str, kw: dict[str, Any], tmp_path: Path) -> None:
    x = torch.randn(2, 3, 8, 8)
    ours = sdk.get_peft_model(ConvNet(), _config(method, init_weights=False, **kw)).eval()
    ours.save_pretrained(tmp_path / "sdk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(ConvNet(), tmp_path / "sdk").eval()
        made = peft.get_peft_model(ConvNet(), peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING[method](init_weights=False,
                                                                                              **kw)).eval()
    made.save_pretrained(tmp_path / "peft")
    loaded = sdk.AdapterModel.from_pretrained(ConvNet(), tmp_path / "peft")
    theirs_keys = {k: tuple(v.shape) for k, v in load_file(tmp_path / "peft" / "adapter_model.safetensors").items()}
    ours_keys = {k: tuple(v.shape) for k, v in load_file(tmp_path / "sdk" / "adapter_model.safetensors").items()}
    assert ours_keys == theirs_keys
    assert check_adapter(signature_from_model(ConvNet()), ours.peft_config["default"], theirs_keys) == []
    with torch.no_grad():
        assert (ours(x) - ConvNet()(x)).abs().max() > 1e-4
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(x), made(x), atol=1e-5, rtol=1e-5)


def test_factorization_matches_peft() -> None:
    from peft.tuners.lokr.layer import factorization as peft_factorization

    for dim in (1, 2, 7, 16, 32, 64, 96, 127, 128, 256, 768, 1000, 4096, 11008):
        for factor in (-1, 2, 3, 4, 8, 16):
            assert factorization(dim, factor) == peft_factorization(dim, factor), (dim, factor)


@pytest.mark.parametrize("method", ["LOHA", "LOKR"])
def test_default_init_is_a_no_op_and_is_flagged_untrained(method: str, tmp_path: Path) -> None:
    model = sdk.get_peft_model(tiny_llama(), _config(method, r=4, target_modules=["q_proj", "v_proj"])).eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids()).logits, tiny_llama()(input_ids=ids()).logits)
    model.save_pretrained(tmp_path)
    tuner = sdk.get_method(method).tuner
    zero = [k for k, v in load_file(tmp_path / "adapter_model.safetensors").items() if tuner.zero_at_init(k)]
    assert zero and all(not v.any() for k, v in load_file(tmp_path / "adapter_model.safetensors").items()
                        if k in zero)


@pytest.mark.parametrize("method", ["LOHA", "LOKR"])
def test_dropouts_train_and_mixed_batches_route_per_sample(method: str) -> None:
    cfg = _config(method, r=4, target_modules=["q_proj", "v_proj"], init_weights=False, rank_dropout=0.5,
                  module_dropout=0.5)
    model = sdk.get_peft_model(tiny_llama(), cfg)
    model.add_adapter("other", _config(method, r=2, target_modules=["q_proj"], init_weights=False))
    model.train()
    loss = model(input_ids=ids(), labels=ids()).loss
    loss.backward()
    model.eval()
    with torch.no_grad():
        first = model(input_ids=ids()).logits
        assert torch.equal(first, model(input_ids=ids()).logits)  # dropouts are off in eval mode
        model.set_adapter("other")
        other = model(input_ids=ids()).logits
        base = tiny_llama()(input_ids=ids()).logits
        mixed = model(input_ids=ids(), adapter_names=["__base__", "other", "default"]).logits
    for i, ref in enumerate((base, other, first)):
        torch.testing.assert_close(mixed[i], ref[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["LOHA", "LOKR"])
def test_gpt2_conv1d_is_refused_as_peft_does(method: str) -> None:
    with pytest.raises(sdk.UnsupportedLayerError, match="Conv1D are not supported"):
        sdk.get_peft_model(tiny_gpt2(), _config(method, target_modules=["c_attn"]))


@pytest.mark.parametrize(
    ("method", "kw", "match"),
    [
        ("LOHA", {"r": 0}, "`r` must be a positive integer"),
        ("LOHA", {"rank_dropout": 1.5}, "rank_dropout"),
        ("LOHA", {"init_weights": "lycoris"}, "init_weights"),
        ("LOKR", {"decompose_factor": 0}, "decompose_factor"),
        ("LOKR", {"rank_pattern": {"q_proj(": 2}}, "rank_pattern"),
        ("LOKR", {"layers_pattern": "layers"}, "layers_to_transform"),
    ],
)
def test_bad_configs_name_the_field(method: str, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(sdk.ConfigError, match=match):
        sdk.config_from_dict({"peft_type": method, "target_modules": ["q_proj"], **kw})


def test_lycoris_init_and_rank_pattern_shapes(tmp_path: Path) -> None:
    cfg = sdk.LoKrConfig(r=2, target_modules=["q_proj", "down_proj"], init_weights="lycoris", decompose_both=True,
                         decompose_factor=4, rank_pattern={"down_proj": 1})
    model = sdk.get_peft_model(tiny_llama(), cfg)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    p = "base_model.model.model.layers.0.mlp.down_proj."
    assert tuple(saved[p + "lokr_w2_a"].shape) == (8, 1) and not saved[p + "lokr_w2_b"].any()
    assert tuple(saved[p + "lokr_w1_a"].shape) == (4, 1) and tuple(saved[p + "lokr_w1_b"].shape) == (1, 4)
    q = "base_model.model.model.layers.0.self_attn.q_proj."
    assert tuple(saved[q + "lokr_w1"].shape) == (4, 4)  # r=2 is not below max(4, 4)/2: W1 stays full
