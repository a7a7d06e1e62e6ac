"""Streaming merge of a LoRA adapter into safetensors shards (sdk.merging.into_base) against peft's merge_and_unload."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from _tiny import ids, tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

import sdk
from sdk.merge_files import merge_adapter_into_base
from sdk.merging.into_base import INDEX_NAME, MergeProgress

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _load_dir(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _save_sharded(model: nn.Module, folder: Path, dtype: torch.dtype | None = None) -> list[Path]:
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder, max_shard_size="20KB")
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) >= 3 and (folder / INDEX_NAME).is_file()
    return shards


@pytest.mark.parametrize(("make", "targets", "extra"), [
    (tiny_llama, ["q_proj", "v_proj", "o_proj", "down_proj", "embed_tokens"], {"modules_to_save": ["lm_head"]}),
    (tiny_gpt2, ["c_attn", "attn.c_proj", "c_fc", "wte"], {}),
], ids=["llama", "gpt2"])
def test_matches_peft_merge_and_unload(tmp_path: Path, make: Callable[[], nn.Module], targets: list[str],
                                       extra: dict[str, object]) -> None:
    shards = _save_sharded(make(), tmp_path / "base")
    peft_model = get_peft_model(make(), PeftLoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                       init_lora_weights=False, **extra))
    if extra:  # a trained full copy, which the merge must write in place of the base head
        with torch.no_grad():
            peft_model.base_model.model.lm_head.modules_to_save["default"].weight.add_(0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    seen: list[MergeProgress] = []
    report = merge_adapter_into_base(tmp_path / "base", tmp_path / "adapter", tmp_path / "out", progress=seen.append)

    want = peft_model.merge_and_unload()
    got = _load_dir(tmp_path / "out")
    reference = {k: v for k, v in want.state_dict().items() if k in got}
    assert set(got) == set(_load_dir(tmp_path / "base"))
    for key, tensor in reference.items():
        torch.testing.assert_close(got[key], tensor, atol=1e-6, rtol=1e-5, msg=key)
    assert len(report.merged) == sum(1 for k in got if any(f"{t}.weight" in k for t in targets)) > 0
    assert report.replaced == (["lm_head.weight"] if extra else []) or "model.embed_tokens.weight" in report.replaced
    # same shard files and index, other files copied, progress reaches the total
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == [s.name for s in shards]
    index_in = json.loads((tmp_path / "base" / INDEX_NAME).read_text())
    index_out = json.loads((tmp_path / "out" / INDEX_NAME).read_text())
    assert index_out["weight_map"] == index_in["weight_map"]
    assert index_out["metadata"]["total_size"] == index_in["metadata"]["total_size"]
    assert (tmp_path / "out" / "config.json").is_file()
    assert [p.done_bytes for p in seen] == sorted(p.done_bytes for p in seen)
    assert seen[-1].done_bytes == seen[-1].total_bytes == report.total_bytes
    # the merged folder loads as a plain model with the adapter's outputs
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids()).logits, want(ids()).logits, atol=1e-5, rtol=1e-5)


def test_sdk_adapter_and_half_precision_base(tmp_path: Path) -> None:
    """An adapter saved by the sdk onto a bfloat16 base: ΔW in float32, result stored as bfloat16."""
    _save_sharded(tiny_llama(), tmp_path / "base", torch.bfloat16)
    model = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "up_proj"],
                                                            init_lora_weights=False, use_rslora=True))
    model.save_pretrained(tmp_path / "adapter")
    merge_adapter_into_base(sorted((tmp_path / "base").glob("*.safetensors")), tmp_path / "adapter",
                            tmp_path / "out", chunk_bytes=256)  # tiny blocks: many row blocks per weight
    base, got = _load_dir(tmp_path / "base"), _load_dir(tmp_path / "out")
    assert (tmp_path / "out" / INDEX_NAME).is_file()  # several files in, so an index out
    layer = model.base_model.model.layers[1].mlp.up_proj
    delta = layer.delta_weight("default").detach()
    key = "model.layers.1.mlp.up_proj.weight"
    assert got[key].dtype == torch.bfloat16
    assert torch.equal(got[key], (base[key].float() + delta).to(torch.bfloat16))
    untouched = "model.layers.1.mlp.gate_proj.weight"
    assert torch.equal(got[untouched], base[untouched])


def test_single_file_base_and_in_memory_adapter(tmp_path: Path) -> None:
    tiny_gpt2().save_pretrained(tmp_path / "base")  # one model.safetensors, no index
    config = sdk.LoraConfig(r=2, target_modules=["attn.c_proj"], init_lora_weights=False)
    model = sdk.get_peft_model(tiny_gpt2(), config)
    from sdk.formats import adapter_state_dict

    state = {k: v.detach() for k, v in adapter_state_dict(model.base_model, "default", config,
                                                          sdk.get_method("LORA").tuner).items()}
    report = merge_adapter_into_base(tmp_path / "base", (state, config), tmp_path / "out", show_progress=True)
    assert [p.name for p in report.files] == ["model.safetensors"] and not (tmp_path / "out" / INDEX_NAME).exists()
    merged = model.merge_and_unload().state_dict()
    got = load_file(tmp_path / "out" / "model.safetensors")
    for key, tensor in got.items():
        torch.testing.assert_close(tensor, merged[key], atol=1e-6, rtol=1e-5)
    # a square Conv1D weight with a config that does not say fan_in_fan_out: the caller's kinds decide
    plain = config.copy(fan_in_fan_out=False)
    kinds = {p: "conv1d" for p in (k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in state)}
    merge_adapter_into_base(tmp_path / "base", (state, plain), tmp_path / "out2", kinds=kinds)  # type: ignore[arg-type]
    assert all(torch.equal(v, load_file(tmp_path / "out2" / "model.safetensors")[k]) for k, v in got.items())


def test_refuses_adapters_that_do_not_fit_before_writing(tmp_path: Path) -> None:
    _save_sharded(tiny_llama(layers=2), tmp_path / "base")
    deeper = sdk.get_peft_model(tiny_llama(layers=3), sdk.LoraConfig(r=2, target_modules=["q_proj"]))
    deeper.save_pretrained(tmp_path / "deeper")
    with pytest.raises(sdk.MergeError, match=r"model\.layers\.2\.self_attn\.q_proj: the adapter targets this module"):
        merge_adapter_into_base(tmp_path / "base", tmp_path / "deeper", tmp_path / "out")
    assert not (tmp_path / "out").exists()

    from transformers import LlamaConfig, LlamaForCausalLM

    wide = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))
    sdk.get_peft_model(wide, sdk.LoraConfig(r=2, target_modules=["up_proj"])).save_pretrained(tmp_path / "wide")
    with pytest.raises(sdk.MergeError, match=r"up_proj\.weight: shapes do not match: weight \(64, 32\)"):
        merge_adapter_into_base(tmp_path / "base", tmp_path / "wide", tmp_path / "out")
    with pytest.raises(sdk.MergeError, match="holds the base files"):
        merge_adapter_into_base(tmp_path / "base", tmp_path / "deeper", tmp_path / "base")
    with pytest.raises(sdk.MergeError, match=r"no \*\.safetensors files"):
        merge_adapter_into_base(tmp_path / "deeper" / "..", tmp_path / "deeper", tmp_path / "out")
    assert not (tmp_path / "out").exists()


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    from sdk.merge_files import merge_adapter_into_base
    # warm up on a small model of the same shape family: code paths and libraries are loaded
    merge_adapter_into_base(sys.argv[4], sys.argv[5], sys.argv[6], chunk_bytes=4 << 20)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak) to the current RSS
    before = status("VmRSS")
    merge_adapter_into_base(sys.argv[1], sys.argv[2], sys.argv[3], chunk_bytes=4 << 20)
    print(json.dumps({"before": before, "peak": status("VmHWM")}))
""")


def _synthetic(base: Path, adapter: Path, dim: int) -> tuple[Path, dict[str, torch.Tensor]]:
    """4 shards of 4 dim×dim float32 attention weights, and a LoRA on every q/v weight."""
    base.mkdir()
    g = torch.Generator().manual_seed(0)
    weight_map: dict[str, str] = {}
    for shard in range(4):
        tensors = {f"model.layers.{shard}.self_attn.{n}.weight": torch.randn(dim, dim, generator=g)
                   for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
        name = f"model-{shard:05d}-of-00004.safetensors"
        save_file(tensors, base / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    (base / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": 16 * dim * dim * 4},
                                               "weight_map": weight_map}))
    state = {}
    for layer in range(4):
        for n in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{n}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(8, dim, generator=g) / 50
            state[f"{prefix}.lora_B.weight"] = torch.randn(dim, 8, generator=g) / 50
    from sdk.formats import save_adapter

    save_adapter(adapter, sdk.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]), state)
    return base, state


def test_peak_memory_stays_near_one_tensor(tmp_path: Path) -> None:
    """16 MiB tensors, 256 MiB of shards, every q/v weight adapted: the merge's extra peak RSS stays near
    one tensor (measured in a fresh process from the kernel's own high-water mark)."""
    base, state = _synthetic(tmp_path / "base", tmp_path / "adapter", 2048)
    _synthetic(tmp_path / "warm", tmp_path / "warm_adapter", 64)
    args = [base, tmp_path / "adapter", tmp_path / "out", tmp_path / "warm", tmp_path / "warm_adapter",
            tmp_path / "warm_out"]
    run = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, *map(str, args)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    numbers = json.loads(run.stdout.strip().splitlines()[-1])
    extra = numbers["peak"] - numbers["before"]
    tensor = 2048 * 2048 * 4
    print(f"merge raised peak RSS by {extra / 2**20:.1f} MiB")
    assert extra < 2 * tensor + (16 << 20), f"merge raised peak RSS by {extra / 2**20:.0f} MiB"
    out = load_file(tmp_path / "out" / "model-00002-of-00004.safetensors")
    src = load_file(base / "model-00002-of-00004.safetensors")
    p = "base_model.model.model.layers.2.self_attn.q_proj"
    delta = 2.0 * state[f"{p}.lora_B.weight"] @ state[f"{p}.lora_A.weight"]
    want = src["model.layers.2.self_attn.q_proj.weight"] + delta
    torch.testing.assert_close(out["model.layers.2.self_attn.q_proj.weight"], want, atol=1e-5, rtol=1e-5)
    assert torch.equal(out["model.layers.2.self_attn.k_proj.weight"], src["model.layers.2.self_attn.k_proj.weight"])
