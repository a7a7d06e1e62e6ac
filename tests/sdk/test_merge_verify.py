"""Issue 19: checking merge results on probe inputs (sdk.merging.verify), the check merge jobs run too."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from safetensors.torch import load_file, save_file

from sdk.formats import read_adapter_weights, read_config
from sdk.merging.combine import combine_lora_adapters
from sdk.merging.options import LoraSettings
from sdk.merging.verify import MergeCheckFailed, check_combination, check_merged_weights
from sdk.methods import config_from_dict


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _adapter(tmp: Path, seed: int, **kw: object) -> tuple[dict[str, torch.Tensor], object]:
    kw.setdefault("target_modules", ["q_proj", "v_proj"])
    torch.manual_seed(seed)
    model = get_peft_model(tiny_llama(), PeftLoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **kw))
    folder = tmp / f"a{seed}"
    model.save_pretrained(folder)
    return read_adapter_weights(folder), config_from_dict(read_config(folder))


def _inputs(pairs: list[tuple[dict[str, torch.Tensor], object]]) -> list[tuple[dict[str, torch.Tensor], LoraSettings]]:
    return [(sd, LoraSettings.from_config(c)) for sd, c in pairs]  # type: ignore[arg-type]


def test_exact_types_pass_and_approximate_types_are_measured(tmp_path: Path) -> None:
    """cat is exact (rsLoRA and per-module patterns included); multi-input linear is PEFT's factor-wise sum,
    checked exactly, its distance from the weighted sum measured; svd's error is measured."""
    a = _adapter(tmp_path, 1, use_rslora=True, rank_pattern={"q_proj": 6}, alpha_pattern={"v_proj": 3})
    b = _adapter(tmp_path, 2)
    pairs = [a, b]
    sds, configs = [p[0] for p in pairs], [p[1] for p in pairs]
    out, config = combine_lora_adapters(sds, configs, [0.7, -0.4], "cat", verify=True)
    check = check_combination(_inputs(pairs), [0.7, -0.4], "cat", out, LoraSettings.from_config(config))
    assert check.kind == "exact" and check.max_relative_error < 1e-6 and len(check.modules) == 4
    b6 = _adapter(tmp_path, 3)
    out, config = combine_lora_adapters([b[0], b6[0]], [b[1], b6[1]], [0.5, 0.5], "linear", verify=True)
    linear = check_combination(_inputs([b, b6]), [0.5, 0.5], "linear", out, LoraSettings.from_config(config))
    assert linear.kind == "factorwise" and linear.max_relative_error > 0.05  # the cross terms, measured
    out, config = combine_lora_adapters(sds, configs, [0.7, -0.4], "svd", svd_rank=2)
    svd = check_combination(_inputs(pairs), [0.7, -0.4], "svd", out, LoraSettings.from_config(config))
    assert svd.kind == "approximate" and svd.tolerance is None and 0.01 < svd.max_relative_error < 1.0
    assert set(svd.to_json()) == {"kind", "tolerance", "probes", "seed", "max_relative_error", "modules"}


def test_a_corrupted_module_or_a_wrong_scale_fails_naming_the_module(tmp_path: Path) -> None:
    pairs = [_adapter(tmp_path, 1), _adapter(tmp_path, 2)]
    sds, configs = [p[0] for p in pairs], [p[1] for p in pairs]
    out, config = combine_lora_adapters(sds, configs, [1.0, 1.0], "cat")
    key = next(k for k in out if "layers.1.self_attn.v_proj.lora_B" in k)
    bad = dict(out) | {key: out[key] * 1.01}
    with pytest.raises(MergeCheckFailed) as caught:
        check_combination(_inputs(pairs), [1.0, 1.0], "cat", bad, LoraSettings.from_config(config))
    assert caught.value.module == "model.layers.1.self_attn.v_proj" and "v_proj" in str(caught.value)
    wrong = LoraSettings.from_config(config.copy(lora_alpha=config.lora_alpha * 2))  # type: ignore[attr-defined]
    with pytest.raises(MergeCheckFailed, match="weighted sum"):
        check_combination(_inputs(pairs), [1.0, 1.0], "cat", out, wrong)
    missing = {k: v for k, v in out.items() if "layers.0.self_attn.q_proj" not in k}
    with pytest.raises(MergeCheckFailed, match="lacks it"):
        check_combination(_inputs(pairs), [1.0, 1.0], "cat", missing, LoraSettings.from_config(config))


@pytest.mark.parametrize("extra", [
    {"use_rslora": True},
    {"rank_pattern": {"q_proj": 2}, "alpha_pattern": {"v_proj": 5}},
    {"use_rslora": True, "rank_pattern": {"layers.1.self_attn.v_proj": 8}, "alpha_pattern": {"q_proj": 1}},
], ids=["rslora", "patterns", "both"])
def test_into_base_check_agrees_with_peft_merge_and_unload(tmp_path: Path, extra: dict[str, object]) -> None:
    """PEFT's own merged weights pass the check (its W + ΔW uses the same scales), and reading the config
    without the scaling option fails it on a named weight."""
    base = tiny_llama()
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    torch.manual_seed(5)
    peft_model = get_peft_model(tiny_llama(), PeftLoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                             init_lora_weights=False, **extra))  # type: ignore[arg-type]
    peft_model.save_pretrained(tmp_path / "ad")
    merged = peft_model.merge_and_unload().state_dict()
    adapter = read_adapter_weights(tmp_path / "ad")
    config = config_from_dict(read_config(tmp_path / "ad"))
    settings = LoraSettings.from_config(config)
    check = check_merged_weights(base_sd.__getitem__, merged.__getitem__, adapter, settings, {})
    assert check.kind == "into-base" and len(check.modules) == 4 and check.max_relative_error < 1e-5
    plain = LoraSettings(r=settings.r, lora_alpha=settings.lora_alpha)
    with pytest.raises(MergeCheckFailed) as caught:
        check_merged_weights(base_sd.__getitem__, merged.__getitem__, adapter, plain, {})
    assert caught.value.module.endswith(".weight") and "W + ΔW" in str(caught.value)


def test_into_base_check_reads_transposed_layouts(tmp_path: Path) -> None:
    """GPT-2's Conv1D weights (in×out) and embeddings: ΔW is (B·A)ᵀ."""
    from sdk.merge_files import merge_adapter_into_base

    base = tiny_gpt2()
    base.save_pretrained(tmp_path / "base")
    torch.manual_seed(3)
    peft_model = get_peft_model(tiny_gpt2(), PeftLoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "wte"],
                                                            init_lora_weights=False, fan_in_fan_out=True))
    peft_model.save_pretrained(tmp_path / "ad")
    merge_adapter_into_base(tmp_path / "base", tmp_path / "ad", tmp_path / "out", verify=True)
    base_sd = load_file(tmp_path / "base" / "model.safetensors")
    out_sd = load_file(tmp_path / "out" / "model.safetensors")
    adapter = read_adapter_weights(tmp_path / "ad")
    settings = LoraSettings.from_config(config_from_dict(read_config(tmp_path / "ad")))
    kinds = {p: "conv1d" for p in ("transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn")}
    check = check_merged_weights(base_sd.__getitem__, out_sd.__getitem__, adapter, settings, kinds)
    assert len(check.modules) == 3
    out_sd["transformer.wte.weight"][7, 3] += 0.5
    with pytest.raises(MergeCheckFailed, match=r"transformer\.wte\.weight"):
        check_merged_weights(base_sd.__getitem__, out_sd.__getitem__, adapter, settings, kinds)


def test_merge_into_base_with_verify_refuses_a_corrupted_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sdk.merge_files
    from sdk.merge_files import merge_adapter_into_base

    tiny_llama().save_pretrained(tmp_path / "base")
    torch.manual_seed(4)
    peft_model = get_peft_model(tiny_llama(), PeftLoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"],
                                                             init_lora_weights=False, use_rslora=True))
    peft_model.save_pretrained(tmp_path / "ad")
    real = sdk.merge_files.merge_lora_into_shards

    def corrupt(*args: object, **kwargs: object) -> object:
        report = real(*args, **kwargs)  # type: ignore[arg-type]
        out = tmp_path / "out" / "model.safetensors"
        tensors = load_file(out)
        tensors["model.layers.0.self_attn.q_proj.weight"] *= 1.001
        save_file(tensors, out)
        return report

    monkeypatch.setattr(sdk.merge_files, "merge_lora_into_shards", corrupt)
    merge_adapter_into_base(tmp_path / "base", tmp_path / "ad", tmp_path / "out")  # unchecked: no error
    with pytest.raises(MergeCheckFailed, match=r"model\.layers\.0\.self_attn\.q_proj\.weight"):
        merge_adapter_into_base(tmp_path / "base", tmp_path / "ad", tmp_path / "out", verify=True)
