"""Combining LoRA adapters (sdk.merging.combine, AdapterModel.add_weighted_adapter) vs peft's add_weighted_adapter.

Adapters are made and saved by the real peft package on tiny models; our pure functions read the
saved files. PEFT draws the random masks of the dare types from the global RNG after injecting
the new adapter (whose initialisation also draws from it), so the tests re-seed the global RNG
right after peft's injection: both sides then draw their masks from the same RNG state.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from _tiny import ConvNet, ids, tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model, get_peft_model_state_dict
from torch import nn

import sdk
from sdk.config import AdapterConfig
from sdk.formats import PREFIX, adapter_state_dict, read_adapter_weights, read_config
from sdk.merge_files import combine_lora_adapter_dirs
from sdk.merging.combine import combine_lora_adapters
from sdk.merging.options import COMBINATION_TYPES
from sdk.methods import config_from_dict

SEED = 1234
WEIGHTS = [0.7, -0.4, 1.3]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _reseed_after_inject(model: Any, seed: int) -> None:
    """Make peft seed the global RNG after it injects (and randomly initialises) the new adapter."""
    inner = model.base_model
    original = inner.inject_adapter

    def inject(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        torch.manual_seed(seed)
        return result

    inner.inject_adapter = inject


@dataclasses.dataclass
class Case:
    peft_model: Any
    folder: Path
    names: list[str]
    make: Callable[[], nn.Module]
    inputs: Callable[[], torch.Tensor]

    def states(self) -> list[dict[str, torch.Tensor]]:
        return [read_adapter_weights(self.folder / n) for n in self.names]

    def configs(self) -> list[AdapterConfig]:
        return [config_from_dict(read_config(self.folder / n)) for n in self.names]

    def order(self) -> list[str]:
        return [p for p, _ in self.peft_model.base_model.model.named_modules()]


def _case(tmp: Path, make: Callable[[], nn.Module], configs: list[dict[str, Any]],
          inputs: Callable[[], torch.Tensor]) -> Case:
    names = [f"ad{i}" for i in range(len(configs))]
    model = get_peft_model(make(), PeftLoraConfig(init_lora_weights=False, **configs[0]), names[0])
    for i, (name, cfg) in enumerate(zip(names[1:], configs[1:], strict=True)):
        torch.manual_seed(100 + i)
        model.add_adapter(name, PeftLoraConfig(init_lora_weights=False, **cfg))
    model.save_pretrained(tmp)  # every non-default adapter lands in tmp/<name>/
    _reseed_after_inject(model, SEED)
    model.eval()
    return Case(model, tmp, names, make, inputs)


@pytest.fixture(scope="module")
def llama_case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return _case(tmp_path_factory.mktemp("llama"), tiny_llama, [
        {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        {"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "o_proj"]},
        {"r": 4, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj", "embed_tokens"]},
    ], ids)


@pytest.fixture(scope="module")
def gpt2_case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return _case(tmp_path_factory.mktemp("gpt2"), tiny_gpt2, [
        {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn", "attn.c_proj"]},
        {"r": 2, "lora_alpha": 4, "target_modules": ["c_attn", "c_fc"]},
    ], ids)


def _peft_combine(case: Case, new: str, combination_type: str, weights: list[float], **kw: Any
                  ) -> dict[str, torch.Tensor]:
    case.peft_model.add_weighted_adapter(case.names, weights, new, combination_type=combination_type, **kw)
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(case.peft_model, adapter_name=new).items()}


def _deltas(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, a in state.items():
        for a_suffix, b_suffix in ((".lora_A.weight", ".lora_B.weight"), (".lora_embedding_A", ".lora_embedding_B")):
            if key.endswith(a_suffix):
                b = state[key[: -len(a_suffix)] + b_suffix]
                out[key[: -len(a_suffix)]] = b.flatten(1) @ a.flatten(1)
    return out


def _sdk_model_with(case: Case, config: AdapterConfig, state: dict[str, torch.Tensor]) -> sdk.AdapterModel:
    model = sdk.AdapterModel(case.make())
    model._load("combined", config, state)
    model.set_adapter("combined")
    return model.eval()


def _peft_logits(case: Case, adapter: str) -> torch.Tensor:
    case.peft_model.set_adapter(adapter)
    with torch.no_grad():
        return case.peft_model(case.inputs()).logits


def _assert_same(case: Case, new: str, want: dict[str, torch.Tensor], got: dict[str, torch.Tensor],
                 config: AdapterConfig) -> None:
    assert set(got) == set(want)
    for key, tensor in want.items():
        assert got[key].shape == tensor.shape, key
    want_d, got_d = _deltas(want), _deltas(got)
    assert want_d and set(want_d) == set(got_d)
    for key in want_d:
        torch.testing.assert_close(got_d[key], want_d[key], atol=1e-5, rtol=1e-5, msg=key)
    model = _sdk_model_with(case, config, got)
    with torch.no_grad():
        torch.testing.assert_close(model(case.inputs()).logits, _peft_logits(case, new), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("combination_type", COMBINATION_TYPES)
def test_each_type_matches_peft_on_llama(llama_case: Case, combination_type: str) -> None:
    new = f"new_{combination_type}"
    kw = {"density": 0.5, "majority_sign_method": "frequency" if "ties" in combination_type else "total"}
    want = _peft_combine(llama_case, new, combination_type, WEIGHTS, **kw)
    gen = torch.Generator().manual_seed(SEED)
    got, config = combine_lora_adapters(llama_case.states(), llama_case.configs(), WEIGHTS, combination_type,
                                        generator=gen, module_order=llama_case.order(), **kw)
    _assert_same(llama_case, new, want, got, config)
    peft_cfg = llama_case.peft_model.peft_config[new]
    assert config.r == peft_cfg.r and config.lora_alpha == peft_cfg.lora_alpha
    assert sorted(config.target_modules) == sorted(peft_cfg.target_modules)


@pytest.mark.parametrize("combination_type", ["cat", "svd", "ties_svd", "dare_linear_svd", "magnitude_prune_svd"])
def test_conv1d_and_mixed_ranks_match_peft_on_gpt2(gpt2_case: Case, combination_type: str) -> None:
    new = f"new_{combination_type}"
    weights = [1.5, 0.5]
    want = _peft_combine(gpt2_case, new, combination_type, weights, density=0.3, svd_rank=3)
    torch.manual_seed(SEED)  # the global RNG this time (generator=None), as peft uses it
    got, config = combine_lora_adapters(gpt2_case.states(), gpt2_case.configs(), weights, combination_type,
                                        density=0.3, svd_rank=3, module_order=gpt2_case.order())
    _assert_same(gpt2_case, new, want, got, config)
    assert config.fan_in_fan_out is True


def test_conv2d_matches_peft(tmp_path: Path) -> None:
    def inputs() -> torch.Tensor:
        return torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(5))

    case = _case(tmp_path, ConvNet, [
        {"r": 2, "lora_alpha": 4, "target_modules": ["conv", "head"]},
        {"r": 2, "lora_alpha": 2, "target_modules": ["conv"]},
    ], inputs)
    for ct in ("cat", "svd", "ties"):
        want = _peft_combine(case, f"n_{ct}", ct, [0.8, 0.6], density=0.7)
        got, config = combine_lora_adapters(case.states(), case.configs(), [0.8, 0.6], ct, density=0.7)
        assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
        want_d, got_d = _deltas(want), _deltas(got)
        for key in want_d:
            torch.testing.assert_close(got_d[key], want_d[key], atol=1e-5, rtol=1e-5)
        model = sdk.AdapterModel(ConvNet())
        model._load("c", config, got)
        model.set_adapter("c")
        case.peft_model.set_adapter(f"n_{ct}")
        with torch.no_grad():
            torch.testing.assert_close(model(inputs()), case.peft_model(inputs()), atol=1e-5, rtol=1e-5)


def test_add_weighted_adapter_on_adapter_model_matches_peft(llama_case: Case) -> None:
    model = sdk.AdapterModel.from_pretrained(tiny_llama(), llama_case.folder / "ad0", adapter_name="ad0")
    for name in llama_case.names[1:]:
        model.load_adapter(llama_case.folder / name, name)
    for ct in ("dare_ties", "dare_linear_svd", "cat"):
        want = _peft_combine(llama_case, f"m_{ct}", ct, WEIGHTS, density=0.6)
        torch.manual_seed(SEED)
        model.add_weighted_adapter(llama_case.names, WEIGHTS, f"m_{ct}", combination_type=ct, density=0.6)
        assert f"m_{ct}" in model.adapter_names and model.active_adapters == ["ad0"]  # added, not activated
        config = model.peft_config[f"m_{ct}"]
        mine = adapter_state_dict(model.base_model, f"m_{ct}", config, sdk.get_method("LORA").tuner)
        want_d, got_d = _deltas(want), _deltas({k: v.detach() for k, v in mine.items()})
        assert set(want_d) == set(got_d)
        for key in want_d:
            torch.testing.assert_close(got_d[key], want_d[key], atol=1e-5, rtol=1e-5)
        model.set_adapter(f"m_{ct}")
        with torch.no_grad():
            torch.testing.assert_close(model(ids()).logits, _peft_logits(llama_case, f"m_{ct}"), atol=1e-5, rtol=1e-5)
        model.set_adapter("ad0")
    with pytest.raises(sdk.AdapterNameError, match="already exists"):
        model.add_weighted_adapter(llama_case.names, WEIGHTS, "m_cat", combination_type="cat")
    with pytest.raises(sdk.AdapterNameError, match="unknown adapter"):
        model.add_weighted_adapter(["ad0", "nope"], [1.0, 1.0], "x", combination_type="cat")


def test_generator_makes_dare_reproducible(llama_case: Case) -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        return combine_lora_adapters(llama_case.states(), llama_case.configs(), WEIGHTS, "dare_ties", density=0.5,
                                     generator=torch.Generator().manual_seed(seed))[0]

    first, again, other = run(1), run(1), run(2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_single_adapter_is_linear_and_result_saves_and_loads_in_peft(llama_case: Case, tmp_path: Path) -> None:
    folders = [llama_case.folder / n for n in llama_case.names]
    one, config1 = combine_lora_adapters(llama_case.states()[:1], llama_case.configs()[:1], [2.0], "dare_ties")
    assert config1.r == 4 and config1.lora_alpha == 4  # as peft: a single adapter always combines linearly
    config = combine_lora_adapter_dirs(folders, WEIGHTS, tmp_path / "out", "cat")
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file() and config.r == 12
    theirs = PeftModel.from_pretrained(tiny_llama(), tmp_path / "out").eval()
    ours = sdk.AdapterModel.from_pretrained(tiny_llama(), tmp_path / "out")
    with torch.no_grad():
        torch.testing.assert_close(ours(ids()).logits, theirs(ids()).logits, atol=1e-5, rtol=1e-5)
        base = tiny_llama()(ids()).logits
    assert not torch.allclose(ours(ids()).logits, base)
    # weight 2 on one adapter: A and B each get sqrt(2·s), so the new ΔW (scale 1) is 2·s·B·A exactly
    scale = llama_case.configs()[0].scaling_for("q_proj")
    want = _deltas(read_adapter_weights(folders[0]))
    for key, delta in _deltas(one).items():
        torch.testing.assert_close(delta, 2 * scale * want[key])


def test_rslora_inputs_give_a_correctly_scaled_result(tmp_path: Path) -> None:
    case = _case(tmp_path, tiny_llama, [
        {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "use_rslora": True},
        {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "use_rslora": True},
    ], ids)
    want = _peft_combine(case, "n", "cat", [1.0, 1.0])
    got, config = combine_lora_adapters(case.states(), case.configs(), [1.0, 1.0], "cat")
    for key in want:  # the same tensors as peft ...
        torch.testing.assert_close(got[key], want[key])
    assert config.use_rslora is False and config.scaling_for("model.layers.0.self_attn.q_proj") == 1.0
    # ... and, unlike peft's config (which keeps use_rslora and so scales by sqrt(r)), exactly the sum of both adapters
    both = sdk.AdapterModel.from_pretrained(tiny_llama(), tmp_path / "ad0", adapter_name="ad0")
    both.load_adapter(tmp_path / "ad1", "ad1")
    both.set_adapter(["ad0", "ad1"])
    combined = _sdk_model_with(case, config, got)
    with torch.no_grad():
        torch.testing.assert_close(combined(ids()).logits, both(ids()).logits, atol=1e-5, rtol=1e-5)


def test_modules_to_save_copy_is_carried_over(tmp_path: Path) -> None:
    case = _case(tmp_path, tiny_llama, [
        {"r": 2, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"]},
        {"r": 2, "target_modules": ["v_proj"]},
    ], ids)
    states = case.states()
    key = f"{PREFIX}lm_head.weight"
    states[0][key] = states[0][key] + 1.0  # a "trained" head
    got, config = combine_lora_adapters(states, case.configs(), [1.0, 1.0], "linear")
    torch.testing.assert_close(got[key], states[0][key])
    assert config.modules_to_save == ["lm_head"]
    model = _sdk_model_with(case, config, got)
    assert torch.equal(model.base_model.lm_head.copies["combined"].weight, states[0][key])
    with pytest.raises(sdk.MergeError, match="both train"):
        combine_lora_adapters([states[0], states[0]], [case.configs()[0]] * 2, [1.0, 1.0], "cat")


def test_different_filters_give_an_exact_path_target(tmp_path: Path) -> None:
    case = _case(tmp_path, tiny_llama, [
        {"r": 2, "target_modules": ["q_proj"], "layers_to_transform": [0]},
        {"r": 2, "target_modules": ["v_proj"]},
    ], ids)
    got, config = combine_lora_adapters(case.states(), case.configs(), [1.0, 1.0], "svd")
    assert isinstance(config.target_modules, str) and config.layers_to_transform is None
    model = _sdk_model_with(case, config, got)  # selects exactly the three combined modules, so it loads
    assert len(_deltas(got)) == 3 and model.adapter_names == ["combined"]


@dataclasses.dataclass
class _OtherConfig(AdapterConfig):
    peft_type: ClassVar[str] = "IA3"


def test_bad_inputs_are_refused_with_clear_errors(llama_case: Case) -> None:
    states, configs = llama_case.states(), llama_case.configs()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"state_dicts": [], "configs": [], "weights": []}, "no adapters"),
        ({"weights": [1.0, 2.0]}, "2 weights for 3 adapters"),
        ({"configs": configs[:2]}, "one config per adapter"),
        ({"weights": [1.0, float("nan"), 1.0]}, r"weights\[1\] must be a finite number"),
        ({"combination_type": "mean"}, "unknown combination_type"),
        ({"combination_type": "ties"}, "needs `density`"),
        ({"combination_type": "ties", "density": 0.0}, r"in \(0, 1\]"),
        ({"combination_type": "dare_linear", "density": 1.5}, r"in \(0, 1\]"),
        ({"combination_type": "ties", "density": 0.5, "majority_sign_method": "max"}, "'total' or 'frequency'"),
        ({"combination_type": "svd", "svd_rank": 0}, "svd_rank"),
        ({"combination_type": "svd", "svd_clamp": 2}, "svd_clamp"),
        ({"configs": [configs[0], configs[1], _OtherConfig()]}, "different methods"),
        ({"configs": [_OtherConfig()] * 3}, "only LoRA adapters"),
        ({"configs": [configs[0], configs[1], configs[2].copy(bias="all")]}, "trains biases"),
        ({"configs": [configs[0], configs[1], configs[2].copy(target_modules=".*q_proj")]}, "mix lists"),
        ({"configs": [configs[0], configs[1], configs[2].copy(r=8)], "combination_type": "linear"},
         "one rank, got ranks"),
        ({"state_dicts": [states[0], states[1], {"x.weight": torch.zeros(2)}], "combination_type": "cat"},
         "adapter 2 has no LoRA factors"),
        ({"state_dicts": [states[0], states[1], {k: v for k, v in states[2].items() if "lora_B" not in k}],
          "combination_type": "cat"}, "but no B"),
    ]
    for change, message in cases:
        args: dict[str, Any] = {"state_dicts": states, "configs": configs, "weights": WEIGHTS,
                                "combination_type": "cat", **change}
        with pytest.raises(sdk.MergeError, match=message):
            combine_lora_adapters(**args)


def test_inputs_are_not_modified(llama_case: Case) -> None:
    states = llama_case.states()
    before = [{k: v.clone() for k, v in s.items()} for s in states]
    combine_lora_adapters(states, llama_case.configs(), WEIGHTS, "ties", density=0.5)
    assert all(torch.equal(b[k], v) for b, s in zip(before, states, strict=True) for k, v in s.items())


def _loaded(case: Case) -> sdk.AdapterModel:
    model = sdk.AdapterModel.from_pretrained(case.make(), case.folder / case.names[0], adapter_name=case.names[0])
    for name in case.names[1:]:
        model.load_adapter(case.folder / name, name)
    return model.eval()


def test_add_weighted_adapter_streams_the_same_tensors_as_combine(tmp_path: Path) -> None:
    case = _case(tmp_path, tiny_llama, [
        {"r": 2, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]},
        {"r": 2, "target_modules": ["v_proj"]},
    ], ids)
    model = _loaded(case)
    tuner = sdk.get_method("LORA").tuner
    # svd_rank 20 exceeds v_proj's min(out 16, in 32): that module's planned rank (16) must fit what is computed
    for ct, kw in (("dare_linear", {"density": 0.5}), ("cat", {}), ("svd", {"svd_rank": 20})):
        states = [{k: v.detach().clone() for k, v in adapter_state_dict(model.base_model, n, model.peft_config[n],
                                                                        tuner).items()} for n in case.names]
        model.add_weighted_adapter(case.names, [0.9, -0.6], f"w_{ct}", combination_type=ct,
                                   generator=torch.Generator().manual_seed(7), **kw)
        want, config = combine_lora_adapters(states, case.configs(), [0.9, -0.6], ct, module_order=case.order(),
                                             generator=torch.Generator().manual_seed(7), **kw)
        got = adapter_state_dict(model.base_model, f"w_{ct}", model.peft_config[f"w_{ct}"], tuner)
        assert set(got) == set(want) and f"{PREFIX}lm_head.weight" in got
        for key, tensor in want.items():
            assert torch.equal(got[key].detach(), tensor), (ct, key)  # the same computation, bit for bit
        assert model.peft_config[f"w_{ct}"].to_dict() == config.to_dict()
    assert model.peft_config["w_svd"].rank_pattern == {r"model\.layers\.0\.self_attn\.v_proj": 16,
                                                       r"model\.layers\.1\.self_attn\.v_proj": 16}


def test_add_weighted_adapter_failing_midway_leaves_the_model_unchanged(
    llama_case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sdk.merging.combine

    model = _loaded(llama_case)
    before_modules = [(p, type(m).__name__) for p, m in model.base_model.named_modules()]
    before_params = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before_logits = model(ids()).logits
    real = sdk.merging.combine.iter_combined_tensors

    def failing(plan: Any) -> Iterator[tuple[str, torch.Tensor]]:  # failure injection after two tensors
        stream = real(plan)
        yield next(stream)
        yield next(stream)
        raise RuntimeError("injected failure")

    monkeypatch.setattr(sdk.merging.combine, "iter_combined_tensors", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        model.add_weighted_adapter(llama_case.names, WEIGHTS, "partial", combination_type="cat")
    assert "partial" not in model.peft_config and model.adapter_names == llama_case.names
    assert [(p, type(m).__name__) for p, m in model.base_model.named_modules()] == before_modules
    after = model.state_dict()
    assert set(after) == set(before_params) and all(torch.equal(after[k], v) for k, v in before_params.items())
    with torch.no_grad():
        assert torch.equal(model(ids()).logits, before_logits)
    monkeypatch.undo()
    model.add_weighted_adapter(llama_case.names, WEIGHTS, "partial", combination_type="cat")  # the name is free again
    assert "partial" in model.adapter_names


def test_adalora_and_dora_adapters_are_refused_clearly(tmp_path: Path) -> None:
    """Neither has plain low-rank factors to combine or to stream into base files."""
    from sdk.merge_files import merge_adapter_into_base

    ada = sdk.get_peft_model(tiny_llama(), sdk.AdaLoraConfig(init_r=4, target_r=2, total_step=10,
                                                              target_modules=["q_proj"]))
    ada.add_adapter("other", sdk.AdaLoraConfig(init_r=4, target_r=2, total_step=10, target_modules=["q_proj"]))
    with pytest.raises(sdk.MergeError, match="only LoRA adapters can be combined"):
        ada.add_weighted_adapter(["default", "other"], [0.5, 0.5], "mix", combination_type="linear")
    dora = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    dora.add_adapter("other", sdk.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(sdk.MergeError, match="DoRA adapter"):
        dora.add_weighted_adapter(["default", "other"], [0.5, 0.5], "mix", combination_type="linear")
    dora.save_pretrained(tmp_path / "dora")
    base = tmp_path / "base"
    tiny_llama().save_pretrained(base)
    with pytest.raises(sdk.MergeError, match="DoRA adapters"):
        merge_adapter_into_base(base, tmp_path / "dora", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
