"""Compatibility of ``sdk``'s LoRA with the real ``peft`` package, both ways.

For every case an adapter is built with random (non-zero) factors on a tiny seeded model,
saved by one library and loaded by the other into a fresh copy of the same base model; the
outputs must agree to 1e-5 and differ from the base model's. The saved files are compared
too: the ``adapter_config.json`` fields both libraries know, and the safetensors key sets and
shapes. Then two adapters side by side, mixed batches, merging, and the Conv2d layer.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import sdk
from sdk.config import UnknownConfigKeyWarning
from sdk.layers import AdapterModule

ATOL = 1e-5
RTOL = 1e-5

# --- cases ---------------------------------------------------------------------------------------
# id -> (model kind, LoraConfig kwargs). Both libraries get exactly these kwargs (plus
# init_lora_weights=False), so the same config means the same thing on both sides.
LLAMA_ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-attn": ("llama", {"target_modules": LLAMA_ATTN}),
    "llama-mlp": ("llama", {"target_modules": ["gate_proj", "up_proj", "down_proj"]}),
    "llama-all-linear": ("llama", {"target_modules": "all-linear"}),
    "llama-regex": ("llama", {"target_modules": r".*\.layers\.1\.self_attn\.(q|v)_proj"}),
    "llama-rank-alpha-pattern": (
        "llama",
        {
            "target_modules": ["q_proj", "v_proj", "o_proj", "down_proj"],
            "rank_pattern": {"q_proj": 2, "layers.1.self_attn.v_proj": 6},
            "alpha_pattern": {"o_proj": 3, r"layers\.0\.mlp\.down_proj": 32},
        },
    ),
    "llama-rslora": (
        "llama",
        {"target_modules": ["q_proj", "v_proj"], "use_rslora": True, "lora_alpha": 16, "rank_pattern": {"v_proj": 2}},
    ),
    "llama-embed": ("llama", {"target_modules": ["embed_tokens", "q_proj"]}),
    "llama-lm_head-modules_to_save": (
        "llama",
        {"target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]},
    ),
    "llama-layers": (
        "llama",
        {"target_modules": ["q_proj", "v_proj"], "layers_to_transform": [1], "layers_pattern": "layers"},
    ),
    "llama-layers-pattern-list": (
        "llama",
        {
            "target_modules": ["q_proj", "v_proj"],
            "layers_to_transform": [0],
            "layers_pattern": ["layers"],
            "rank_pattern": {"v_proj": 2},
        },
    ),
    "llama-embed-and-lm_head": ("llama", {"target_modules": ["embed_tokens", "lm_head", "o_proj"]}),
    "llama-layers-int-no-pattern": ("llama", {"target_modules": ["q_proj", "down_proj"], "layers_to_transform": 0}),
    "llama-exclude-list": ("llama", {"target_modules": "all-linear", "exclude_modules": ["o_proj", "up_proj"]}),
    "llama-exclude-regex": (
        "llama",
        {"target_modules": ["q_proj", "v_proj", "gate_proj"], "exclude_modules": r".*layers\.0\..*"},
    ),
    "llama-bias-all": ("llama_bias", {"target_modules": ["q_proj", "down_proj"], "bias": "all"}),
    "llama-bias-lora_only": ("llama_bias", {"target_modules": ["q_proj", "down_proj"], "bias": "lora_only"}),
    "gpt2-conv1d": ("gpt2", {"target_modules": ["c_attn", "c_proj", "c_fc"]}),
    "gpt2-all-linear": ("gpt2", {"target_modules": "all-linear"}),
    "gpt2-wte": ("gpt2", {"target_modules": ["wte", "c_attn"]}),
    "gpt2-lm_head-modules_to_save-tied": ("gpt2", {"target_modules": ["c_attn"], "modules_to_save": ["lm_head"]}),
    # LoRA on the output head, whose weight is the (tied) input embedding
    "gpt2-lm_head-lora-tied": ("gpt2", {"target_modules": ["c_attn", "lm_head"]}),
    "gpt2-wte-modules_to_save-tied": ("gpt2", {"target_modules": ["c_fc"], "modules_to_save": ["wte"]}),
    "gpt2-layers": ("gpt2", {"target_modules": ["c_attn", "c_fc"], "layers_to_transform": [0], "layers_pattern": "h"}),
    "gpt2-bias-all": ("gpt2", {"target_modules": ["c_attn"], "bias": "all"}),
    "gpt2-bias-lora_only": ("gpt2", {"target_modules": ["c_attn", "c_fc"], "bias": "lora_only"}),
    "conv2d": ("conv", {"target_modules": ["conv", "fc"], "r": 2}),
    # a trained bias plus a full copy of a head that has a bias (the usual classifier-head setup)
    "conv2d-bias-all-modules_to_save": (
        "conv",
        {"target_modules": ["conv"], "r": 2, "bias": "all", "modules_to_save": ["fc"]},
    ),
}
CASE_IDS = list(CASES)


def _kwargs(case: str) -> dict[str, Any]:
    kw = {"r": 4, "lora_alpha": 8, "init_lora_weights": False}
    kw.update(CASES[case][1])
    return kw


# --- helpers -------------------------------------------------------------------------------------


@torch.no_grad()
def _out(model: nn.Module, inputs: dict[str, torch.Tensor], **kw: Any) -> torch.Tensor:
    res = model(**inputs, **kw)
    return res if isinstance(res, torch.Tensor) else res.logits


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}\n{m}")


def _differs(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    diff = (a - b).abs().max().item()
    assert diff > 1e-3, f"{what}: the adapter does not change the output (max |diff| = {diff:.2e})"


@torch.no_grad()
def _perturb_trainable(model: nn.Module, seed: int) -> None:
    """Nudge every trainable tensor (LoRA factors, trained biases, full copies) so nothing is a no-op."""
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)


def _sdk_model(
    make_model: Callable, kind: str, kw: dict[str, Any], seed: int = 1, name: str = "default"
) -> sdk.AdapterModel:
    torch.manual_seed(seed)
    model = sdk.get_peft_model(make_model(kind), sdk.LoraConfig(**kw), adapter_name=name)
    _perturb_trainable(model, seed)
    return model.eval()


def _peft_model(
    make_model: Callable, kind: str, kw: dict[str, Any], seed: int = 1, name: str = "default"
) -> peft.PeftModel:
    torch.manual_seed(seed)
    model = peft.get_peft_model(make_model(kind), peft.LoraConfig(**kw), adapter_name=name)
    _perturb_trainable(model, seed)
    return model.eval()


def _keys_and_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "adapter_config.json").read_text())


def _no_adapter_layers(model: nn.Module) -> None:
    leftovers = [
        n for n, m in model.named_modules() if isinstance(m, AdapterModule) or "lora" in type(m).__name__.lower()
    ]
    assert not leftovers, f"adapter layers left after merge_and_unload: {leftovers}"


def _peft_artifact(key: str) -> bool:
    """Keys peft writes with ``bias="all"`` for a modules_to_save module that has a bias.

    peft's bias filter keeps every key containing "bias" before it rewrites modules_to_save
    keys, so ``<path>.modules_to_save.bias`` and ``<path>.original_module.bias`` end up in the
    file next to the real ``<path>.bias``; peft's own loader ignores them.
    """
    return ".modules_to_save." in key or ".original_module." in key


def _peft_missing_key_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]


# --- 1. sdk -> peft -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASE_IDS)
def test_sdk_adapter_loads_in_peft(case: str, tmp_path: Path, make_model: Callable, make_inputs: Callable) -> None:
    kind = CASES[case][0]
    inputs = make_inputs(kind)
    model = _sdk_model(make_model, kind, _kwargs(case))
    expected = _out(model, inputs)
    _differs(expected, _out(make_model(kind), inputs), case)
    model.save_pretrained(tmp_path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = peft.PeftModel.from_pretrained(make_model(kind), str(tmp_path))
    assert not _peft_missing_key_warnings(caught)
    loaded.eval()
    _close(_out(loaded, inputs), expected, f"{case}: peft output of an sdk-saved adapter")

    # every tensor of the file found a place in peft's model, and peft would save the same keys
    peft_state = peft.get_peft_model_state_dict(loaded, save_embedding_layers=False)
    peft_keys = {k for k in peft_state if not _peft_artifact(k)}
    assert set(_keys_and_shapes(tmp_path)) == peft_keys


# --- 2. peft -> sdk -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASE_IDS)
def test_peft_adapter_loads_in_sdk(case: str, tmp_path: Path, make_model: Callable, make_inputs: Callable) -> None:
    kind = CASES[case][0]
    inputs = make_inputs(kind)
    model = _peft_model(make_model, kind, _kwargs(case))
    expected = _out(model, inputs)
    _differs(expected, _out(make_model(kind), inputs), case)
    model.save_pretrained(str(tmp_path))  # peft's defaults (may include full embedding weights)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = sdk.AdapterModel.from_pretrained(make_model(kind), tmp_path)
    unknown = [str(w.message) for w in caught if issubclass(w.category, UnknownConfigKeyWarning)]
    assert not unknown, f"sdk does not know some keys peft {peft.__version__} writes: {unknown}"
    assert not loaded.training
    _close(_out(loaded, inputs), expected, f"{case}: sdk output of a peft-saved adapter")


# --- 3. the files themselves ------------------------------------------------------------------

#: peft rewrites ``fan_in_fan_out`` for each layer it wraps (True for a Conv1D, False for an
#: nn.Linear), so with both kinds targeted the saved flag is whatever the last layer set (here
#: lm_head: False). Neither library reads the flag for these layer classes on load, and sdk
#: writes True whenever a Conv1D is adapted; so the flag is not compared for such mixes.
_PEFT_LAST_LAYER_SETS_FAN_IN_FAN_OUT = {"gpt2-lm_head-lora-tied"}

#: config fields compared as sets (order is not meaningful; peft keeps some as Python sets)
_SET_FIELDS = {"target_modules", "exclude_modules", "modules_to_save"}


def _norm(field: str, value: Any) -> Any:
    if field in _SET_FIELDS and isinstance(value, list):
        return set(value)
    return value


@pytest.mark.parametrize("case", CASE_IDS)
def test_saved_files_agree(case: str, tmp_path: Path, make_model: Callable) -> None:
    kind = CASES[case][0]
    kw = _kwargs(case)
    _sdk_model(make_model, kind, kw).save_pretrained(tmp_path / "sdk")
    _peft_model(make_model, kind, kw).save_pretrained(str(tmp_path / "peft"), save_embedding_layers=False)

    sdk_files = _keys_and_shapes(tmp_path / "sdk")
    peft_files = {k: v for k, v in _keys_and_shapes(tmp_path / "peft").items() if not _peft_artifact(k)}
    assert set(sdk_files) == set(peft_files), (
        f"only in sdk: {sorted(set(sdk_files) - set(peft_files))}; "
        f"only in peft: {sorted(set(peft_files) - set(sdk_files))}"
    )
    assert sdk_files == peft_files, "tensor shapes differ"

    ours, theirs = _config(tmp_path / "sdk"), _config(tmp_path / "peft")
    assert ours["peft_type"] == theirs["peft_type"] == "LORA"
    assert ours["inference_mode"] is True and theirs["inference_mode"] is True
    common = (set(ours) & set(theirs)) - {"target_modules"}
    for field in {"r", "lora_alpha", "bias", "fan_in_fan_out", "use_rslora", "rank_pattern", "alpha_pattern"}:
        assert field in common, f"{field} missing from a config"
    if case in _PEFT_LAST_LAYER_SETS_FAN_IN_FAN_OUT:
        common.discard("fan_in_fan_out")
    diffs = {f: (ours[f], theirs[f]) for f in sorted(common) if _norm(f, ours[f]) != _norm(f, theirs[f])}
    assert not diffs, f"adapter_config.json fields differ (sdk, peft): {diffs}"

    # target_modules: literal when given as names or regex; peft expands "all-linear" into the
    # module paths it chose, which the identical key sets above already compare.
    if kw["target_modules"] == "all-linear":
        assert ours["target_modules"] == "all-linear" or _norm("target_modules", ours["target_modules"]) == set(
            theirs["target_modules"]
        )
    else:
        assert _norm("target_modules", ours["target_modules"]) == _norm("target_modules", theirs["target_modules"])

    # a file written by either library has the same config keys both libraries can read back
    for folder in ("sdk", "peft"):
        assert sdk.LoraConfig.from_dict(_config(tmp_path / folder)).r == kw["r"]
        assert peft.LoraConfig.from_pretrained(str(tmp_path / folder)).r == kw["r"]


def test_peft_embedding_base_weight_is_accepted(tmp_path: Path, make_model: Callable, make_inputs: Callable) -> None:
    """PEFT also saves the full ``embed_tokens.base_layer.weight`` when embed_tokens is targeted."""
    model = _peft_model(make_model, "llama", _kwargs("llama-embed"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(str(tmp_path))
    assert "base_model.model.model.embed_tokens.base_layer.weight" in _keys_and_shapes(tmp_path)
    loaded = sdk.AdapterModel.from_pretrained(make_model("llama"), tmp_path)
    inputs = make_inputs("llama")
    _close(_out(loaded, inputs), _out(model, inputs))


# --- 4. two adapters, mixed batches -----------------------------------------------------------
# id -> (model kind, kwargs of "default", kwargs of "other")
TWO: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "llama": (
        "llama",
        {"target_modules": ["q_proj", "v_proj"]},
        {"target_modules": ["v_proj", "gate_proj", "down_proj"], "r": 2, "lora_alpha": 5},
    ),
    "llama-embed-modules_to_save": (
        "llama",
        {"target_modules": ["embed_tokens", "q_proj"]},
        {"target_modules": ["k_proj"], "r": 3, "modules_to_save": ["lm_head"]},
    ),
    "llama-modules_to_save-both": (
        "llama",
        {"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]},
        {"target_modules": ["v_proj"], "r": 2, "modules_to_save": ["lm_head"]},
    ),
    "gpt2": (
        "gpt2",
        {"target_modules": ["c_attn", "c_proj"]},
        {"target_modules": ["c_attn", "c_fc", "wte"], "r": 6, "lora_alpha": 3, "use_rslora": True},
    ),
    "conv2d": ("conv", {"target_modules": ["conv", "fc"], "r": 2}, {"target_modules": ["conv"], "r": 3}),
}
TWO_IDS = list(TWO)
MIX = ["default", "other", "__base__", "other", "default"]
#: peft 0.21.2 cannot run these mixed batches itself: its ModulesToSaveWrapper looks up a copy
#: for every adapter in the batch (KeyError: 'default' when only "other" has one)
PEFT_CANNOT_MIX = {"llama-embed-modules_to_save"}


def _two_kwargs(case: str) -> tuple[dict[str, Any], dict[str, Any]]:
    out = []
    for extra in TWO[case][1:]:
        kw = {"r": 4, "lora_alpha": 8, "init_lora_weights": False}
        kw.update(extra)
        out.append(kw)
    return out[0], out[1]


def _sdk_two(make_model: Callable, case: str) -> sdk.AdapterModel:
    kind = TWO[case][0]
    kw_a, kw_b = _two_kwargs(case)
    torch.manual_seed(1)
    model = sdk.get_peft_model(make_model(kind), sdk.LoraConfig(**kw_a))
    model.add_adapter("other", sdk.LoraConfig(**kw_b))
    for name in ("default", "other"):
        model.set_adapter(name)
        _perturb_trainable(model, seed=10 + len(name))
    model.set_adapter("default")
    return model.eval()


def _peft_two(make_model: Callable, case: str) -> peft.PeftModel:
    kind = TWO[case][0]
    kw_a, kw_b = _two_kwargs(case)
    torch.manual_seed(1)
    model = peft.get_peft_model(make_model(kind), peft.LoraConfig(**kw_a))
    model.add_adapter("other", peft.LoraConfig(**kw_b))
    for name in ("default", "other"):
        model.set_adapter(name)
        _perturb_trainable(model, seed=10 + len(name))
    model.set_adapter("default")
    return model.eval()


def _per_adapter(model: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    outs = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        outs[name] = _out(model, inputs)
    model.set_adapter("default")
    with model.disable_adapter():
        outs["__base__"] = _out(model, inputs)
    return outs


def _compare_two(ours: sdk.AdapterModel, theirs: peft.PeftModel, inputs: dict[str, torch.Tensor], case: str) -> None:
    mine, ref = _per_adapter(ours, inputs), _per_adapter(theirs, inputs)
    for name in ("default", "other", "__base__"):
        _close(mine[name], ref[name], f"{case}: adapter {name!r} active")
    _differs(mine["default"], mine["__base__"], f"{case} default")
    _differs(mine["other"], mine["__base__"], f"{case} other")
    _differs(mine["default"], mine["other"], f"{case} default vs other")


@pytest.mark.parametrize("case", TWO_IDS)
def test_two_adapters_sdk_to_peft(case: str, tmp_path: Path, make_model: Callable, make_inputs: Callable) -> None:
    kind = TWO[case][0]
    ours = _sdk_two(make_model, case)
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert (tmp_path / "other" / "adapter_model.safetensors").is_file()

    theirs = peft.PeftModel.from_pretrained(make_model(kind), str(tmp_path))
    theirs.load_adapter(str(tmp_path / "other"), adapter_name="other")
    theirs.eval()
    _compare_two(ours, theirs, make_inputs(kind), case)


@pytest.mark.parametrize("case", TWO_IDS)
def test_two_adapters_peft_to_sdk(case: str, tmp_path: Path, make_model: Callable, make_inputs: Callable) -> None:
    kind = TWO[case][0]
    theirs = _peft_two(make_model, case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.save_pretrained(str(tmp_path))
    assert (tmp_path / "other" / "adapter_model.safetensors").is_file()

    ours = sdk.AdapterModel.from_pretrained(make_model(kind), tmp_path)
    ours.load_adapter(tmp_path / "other", "other")
    ours.eval()
    _compare_two(ours, theirs, make_inputs(kind), case)


@pytest.mark.parametrize("case", TWO_IDS)
def test_mixed_batch_matches_single_adapters_and_peft(
    case: str, tmp_path: Path, make_model: Callable, make_inputs: Callable
) -> None:
    kind = TWO[case][0]
    inputs = make_inputs(kind, batch=len(MIX))
    ours = _sdk_two(make_model, case)
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(make_model(kind), str(tmp_path))
    theirs.load_adapter(str(tmp_path / "other"), adapter_name="other")
    theirs.eval()

    single = _per_adapter(ours, inputs)
    mixed = _out(ours, inputs, adapter_names=MIX)
    for i, name in enumerate(MIX):
        _close(mixed[i], single[name][i], f"{case}: row {i} ({name}) of the mixed batch")
    if case not in PEFT_CANNOT_MIX:
        _close(mixed, _out(theirs, inputs, adapter_names=MIX), f"{case}: sdk vs peft mixed batch")
    # the active adapter is untouched by a mixed batch
    _close(_out(ours, inputs), single["default"], f"{case}: after the mixed batch")


# --- 5. merging -------------------------------------------------------------------------------

#: cases where the embedding that gets a LoRA is tied to the output head: merging changes the
#: head too (in peft as well), so merged outputs equal peft's merged outputs, not the unmerged ones
_TIED_EMBEDDING = {"gpt2-wte", "gpt2-lm_head-lora-tied"}


@pytest.mark.parametrize("case", CASE_IDS)
def test_merge_matches_peft(case: str, tmp_path: Path, make_model: Callable, make_inputs: Callable) -> None:
    kind = CASES[case][0]
    inputs = make_inputs(kind)
    ours = _sdk_model(make_model, kind, _kwargs(case))
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(make_model(kind), str(tmp_path)).eval()
    weights_before = {k: v.clone() for k, v in ours.state_dict().items()}

    unmerged = _out(ours, inputs)
    ours.merge_adapter()
    merged = _out(ours, inputs)
    if case not in _TIED_EMBEDDING:
        _close(merged, unmerged, f"{case}: merged vs unmerged")
    ours.unmerge_adapter()
    _close(_out(ours, inputs), unmerged, f"{case}: after unmerge")
    for k, v in ours.state_dict().items():
        _close(v, weights_before[k], f"{case}: {k} after merge + unmerge")

    ref = theirs.merge_and_unload()
    plain = ours.merge_and_unload()
    _no_adapter_layers(plain)
    assert type(plain) is type(ref)
    _close(_out(plain, inputs), _out(ref, inputs), f"{case}: merge_and_unload outputs")
    _close(_out(plain, inputs), merged, f"{case}: merge_and_unload vs merge_adapter")
    ours_sd, ref_sd = plain.state_dict(), ref.state_dict()
    assert set(ours_sd) == set(ref_sd)
    for k in ref_sd:
        _close(ours_sd[k], ref_sd[k], f"{case}: merged weight {k}")
    # the merged model is the base model's architecture again
    assert set(ours_sd) == set(make_model(kind).state_dict())


@pytest.mark.parametrize("case", ["llama", "gpt2", "conv2d"])
def test_merge_two_adapters_matches_peft(
    case: str, tmp_path: Path, make_model: Callable, make_inputs: Callable
) -> None:
    """Both adapters active at once, then merged together, agree with peft."""
    kind = TWO[case][0]
    inputs = make_inputs(kind)
    ours = _sdk_two(make_model, case)
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(make_model(kind), str(tmp_path))
    theirs.load_adapter(str(tmp_path / "other"), adapter_name="other")
    theirs.eval()

    ours.set_adapter(["default", "other"])
    theirs.base_model.set_adapter(["default", "other"])
    both = _out(ours, inputs)
    _close(both, _out(theirs, inputs), f"{case}: both adapters active")
    ref = theirs.merge_and_unload(adapter_names=["default", "other"])
    plain = ours.merge_and_unload(adapter_names=["default", "other"])
    _no_adapter_layers(plain)
    _close(_out(plain, inputs), _out(ref, inputs), f"{case}: merged two adapters")
    if case != "gpt2":  # "other" adapts wte, which is tied to lm_head: merging changes the head too
        _close(_out(plain, inputs), both, f"{case}: merged two adapters vs unmerged")


# --- 6. a finer look at scaling ---------------------------------------------------------------


def test_rank_and_alpha_pattern_scaling_matches_peft(tmp_path: Path, make_model: Callable) -> None:
    """Per-module rank and scaling agree with peft's after loading an sdk adapter."""
    kw = _kwargs("llama-rank-alpha-pattern") | {"use_rslora": True}
    ours = _sdk_model(make_model, "llama", kw)
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(make_model("llama"), str(tmp_path))
    from sdk.tuners.lora import LoraLayer

    seen = 0
    for path, module in ours.base_model.named_modules():
        if isinstance(module, LoraLayer):
            ref = theirs.base_model.model.get_submodule(path)
            assert module.r["default"] == ref.r["default"], path
            assert module.scaling["default"] == pytest.approx(ref.scaling["default"]), path
            seen += 1
    assert seen == 8
