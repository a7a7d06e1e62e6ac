"""QLoRA: LoRA on bitsandbytes 4-bit (nf4/fp4, double quantization) and 8-bit base layers, on CPU.

Models are tiny Llamas saved once and loaded back through transformers' ``BitsAndBytesConfig``
(the way users get quantized models), or small MLPs quantized by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import bitsandbytes as bnb
import bitsandbytes.functional as bnbf
import peft
import pytest
import torch
from _tiny import ids, tiny_llama
from safetensors import safe_open
from torch import Tensor, nn
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

import sdk
from sdk.quantization import (
    QuantizedMergeWarning,
    dequantize_weight,
    keep_trainable_layout,
    keep_trainable_layout_everywhere,
)
from sdk.signature import check_adapter, signature_from_model
from sdk.tuners.lora.bnb import LoraBnbLinear

QUANTS = ["nf4", "fp4", "int8"]
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def wide_llama(seed: int = 0) -> LlamaForCausalLM:
    """A Llama whose layers are wide enough (in ≥ 64) for bitsandbytes' CPU repacking to happen."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qlora-bases")
    out = {"tiny": root / "tiny", "wide": root / "wide"}
    tiny_llama().save_pretrained(out["tiny"])
    wide_llama().save_pretrained(out["wide"])
    return out


def bnb_config(quant: str, dtype: torch.dtype = torch.float32) -> BitsAndBytesConfig:
    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=quant, bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )


def load_quantized(path: Path, quant: str, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LlamaForCausalLM.from_pretrained(path, quantization_config=bnb_config(quant, dtype), device_map="cpu",
                                                 dtype=dtype)
    return model.eval()


def quantized_mlp(quant: str, seed: int = 0) -> tuple[nn.Sequential, nn.Sequential]:
    """(full-precision MLP, the same MLP quantized by hand)."""
    torch.manual_seed(seed)
    fp = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))

    def make(i: int, o: int) -> nn.Module:
        if quant == "int8":
            return bnb.nn.Linear8bitLt(i, o, has_fp16_weights=False)
        return bnb.nn.Linear4bit(i, o, quant_type=quant, compress_statistics=True, compute_dtype=torch.float32)

    q = nn.Sequential(make(64, 128), nn.ReLU(), make(128, 64))
    q.load_state_dict(fp.state_dict())
    return fp, q.to("cpu")  # bitsandbytes quantizes on .to(device)


def roundtrip(layer: nn.Module, w: Tensor) -> Tensor:
    """``w`` quantized with ``layer``'s settings and dequantized again, computed directly with bitsandbytes."""
    if isinstance(layer, bnb.nn.Linear8bitLt):
        cb, scb, _ = bnbf.int8_vectorwise_quant(w.to(torch.float16))
        return bnbf.int8_vectorwise_dequant(cb, scb).float()
    p = layer.weight
    q, state = bnbf.quantize_4bit(w, blocksize=p.blocksize, compress_statistics=p.compress_statistics,
                                  quant_type=p.quant_type)
    return bnbf.dequantize_4bit(q, state).float()


def grid_error_bound(layer: nn.Module, w: Tensor) -> Tensor:
    """Largest rounding error per element when ``w`` is quantized by ``layer``: half the widest grid gap."""
    if isinstance(layer, bnb.nn.Linear8bitLt):  # int8 per row: step absmax/127 (+ the fp16 cast)
        return w.abs().amax(1, keepdim=True) / 127 * 0.5 * 1.01 + 1e-3 * w.abs()
    p = layer.weight
    gap = p.quant_state.code.sort().values.diff().max()
    absmax = w.reshape(-1, p.blocksize).abs().amax(1, keepdim=True)
    slack = 0.01  # the block's absmax is itself stored in 8 bits (double quantization)
    return ((0.5 * gap + slack) * absmax).expand(-1, p.blocksize).reshape(w.shape)


def twin(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """The MLP's output computed in full precision with the given weights and biases."""
    with torch.no_grad():
        return nn.functional.linear(torch.relu(nn.functional.linear(x, weights[0], biases[0])), weights[1], biases[1])


def raw_bytes(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype in (torch.uint8, torch.int8)}


def lora_layers(model: nn.Module) -> list[LoraBnbLinear]:
    return [m for m in model.modules() if isinstance(m, LoraBnbLinear)]


# --- training -----------------------------------------------------------------------------------


@pytest.mark.parametrize("quant", QUANTS)
def test_qlora_training_lowers_loss_and_the_adapter_works_on_the_full_precision_model(
    quant: str, saved: dict[str, Path], tmp_path: Path
) -> None:
    # checkpointing (recomputing the 4-bit forward) once is enough; bitsandbytes' CPU kernels are slow
    model = sdk.prepare_model_for_kbit_training(load_quantized(saved["tiny"], quant),
                                                use_gradient_checkpointing=quant == "nf4")
    torch.manual_seed(1)
    pm = sdk.get_peft_model(model, sdk.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    assert len(lora_layers(pm)) == 2 * len(ALL_LINEAR)
    assert all(type(m.base_layer).__name__ in ("Linear4bit", "Linear8bitLt") for m in lora_layers(pm))
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    before = raw_bytes(pm)
    assert len(before) == 2 * len(ALL_LINEAR)

    x = ids(4, 12)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=2e-2)
    pm.train()
    losses = []
    for _ in range(6):
        loss = pm(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    after = raw_bytes(pm)
    assert all(torch.equal(before[k], after[k]) for k in before), "quantized base weights changed in training"

    pm.save_pretrained(tmp_path)
    full = tiny_llama()
    with safe_open(tmp_path / "adapter_model.safetensors", "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    config = sdk.config_from_dict(json.loads((tmp_path / "adapter_config.json").read_text()))
    assert check_adapter(signature_from_model(full), config, shapes) == []

    with torch.no_grad():
        base_loss = full(input_ids=x, labels=x).loss.item()
    loaded = sdk.AdapterModel.from_pretrained(full, tmp_path)
    with torch.no_grad():
        tuned_loss = loaded(input_ids=x, labels=x).loss.item()
    gained = losses[0] - losses[-1]
    assert tuned_loss < base_loss - 0.5 * gained, (base_loss, tuned_loss, losses)


def test_a_full_precision_adapter_loads_onto_a_4bit_model(saved: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(2)
    full = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(r=4, target_modules=ALL_LINEAR, init_lora_weights=False))
    full.save_pretrained(tmp_path)
    quant = sdk.AdapterModel.from_pretrained(load_quantized(saved["tiny"], "nf4"), tmp_path)
    assert len(lora_layers(quant)) == 2 * len(ALL_LINEAR)
    x = ids(2, 6)
    with torch.no_grad():
        y_full, y_quant = full(x).logits, quant(x).logits
        with quant.disable_adapter():
            y_quant_base = quant(x).logits
        with full.disable_adapter():
            y_full_base = full(x).logits
    # the adapter moves the quantized model's output the way it moves the full-precision one
    effect_quant, effect_full = (y_quant - y_quant_base).flatten(), (y_full - y_full_base).flatten()
    assert torch.cosine_similarity(effect_quant, effect_full, dim=0) > 0.9


# --- signatures -------------------------------------------------------------------------------


def test_quantized_models_have_the_full_precision_signature(saved: dict[str, Path]) -> None:
    full = signature_from_model(tiny_llama())
    for quant in QUANTS:
        model = load_quantized(saved["tiny"], quant)
        sig = signature_from_model(model)
        assert sig.fingerprint == full.fingerprint, quant
        q_proj = sig.by_path()["model.layers.0.self_attn.q_proj"]
        assert (q_proj.kind, q_proj.in_features, q_proj.out_features) == ("Linear", 32, 32)
        assert q_proj.params == {"weight": (32, 32)}
        assert q_proj.dtype == quant
        wrapped = sdk.get_peft_model(model, sdk.LoraConfig(r=2, target_modules=["q_proj"]))
        assert signature_from_model(wrapped.base_model).fingerprint == full.fingerprint


# --- the AVX512-BF16 repacking trap -----------------------------------------------------------


def _lora_grads(pm: sdk.AdapterModel, x: Tensor) -> dict[str, Tensor | None]:
    pm.train()
    pm.zero_grad()
    pm(input_ids=x, labels=x).loss.backward()
    return {n: p.grad for n, p in pm.named_parameters() if p.requires_grad}


def test_gradients_reach_lora_after_eval_and_generate(saved: dict[str, Path]) -> None:
    x = ids(2, 8)
    config = {"r": 4, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False}
    torch.manual_seed(3)
    fresh = sdk.get_peft_model(load_quantized(saved["wide"], "nf4"), sdk.LoraConfig(**config))
    expected = _lora_grads(fresh, x)

    torch.manual_seed(3)
    pm = sdk.get_peft_model(load_quantized(saved["wide"], "nf4"), sdk.LoraConfig(**config))
    pm.eval()
    with torch.no_grad():
        pm(input_ids=x)
    pm.generate(x[:1], max_new_tokens=3, do_sample=False)
    got = _lora_grads(pm, x)
    # every 4-bit layer is guarded, also the ones without an adapter (o_proj, the MLP) that gradients cross
    layers = [m for m in pm.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14
    assert not any(m.support_avx512bf16_for_cpu for m in layers)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    first = "base_model.model.layers.0.self_attn.q_proj.lora_A.default"
    assert got[first] is not None and got[first].abs().sum() > 0
    assert expected.keys() == got.keys()
    for name, grad in got.items():
        assert grad is not None, name
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6)

    # the control: without the guard, on a CPU with AVX512-BF16, the same sequence loses the gradients
    for m in layers:
        m.support_avx512bf16_for_cpu = bnbf.has_avx512bf16()
    pm.eval()
    with torch.no_grad():
        pm(input_ids=x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that gemv_4bit has no autograd kernel: the trap itself
        unguarded = _lora_grads(pm, x)
    if bnbf.has_avx512bf16():
        assert unguarded[first] is None, "the trap did not bite: bitsandbytes changed; revisit keep_trainable_layout"
    else:
        assert unguarded[first] is not None


def test_wrapping_undoes_a_repacking_that_already_happened(saved: dict[str, Path]) -> None:
    model = load_quantized(saved["wide"], "nf4")
    x = ids(2, 8)
    with torch.no_grad():
        before = model(input_ids=x).logits  # on AVX512-BF16 CPUs this repacks every 4-bit weight
    packed = [getattr(m.weight.quant_state, "packing_format_for_cpu", False)
              for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert all(packed) if bnbf.has_avx512bf16() else not any(packed)
    torch.manual_seed(4)
    pm = sdk.get_peft_model(model, sdk.LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    grads = _lora_grads(pm, x)
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    with torch.no_grad(), pm.disable_adapter():
        pm.eval()
        after = pm(input_ids=x).logits
    torch.testing.assert_close(after, before, rtol=0.05, atol=0.02)  # bf16 absmax of the packed layout


# --- merging into quantized layers -------------------------------------------------------------


@pytest.mark.parametrize("quant", QUANTS)
def test_merge_unmerge_and_unload_on_quantized_layers(quant: str) -> None:
    _, q = quantized_mlp(quant)
    torch.manual_seed(5)
    pm = sdk.get_peft_model(q, sdk.LoraConfig(r=4, target_modules=["0", "2"], init_lora_weights=False))
    layers = lora_layers(pm)
    assert len(layers) == 2
    pm.train()  # dropout is 0; train mode makes both bitsandbytes kinds compute in full precision
    x = torch.randn(6, 64)
    with torch.no_grad():
        y0 = pm(x)
        first_in = x
        first_unmerged = layers[0](first_in)
    w0 = [dequantize_weight(m.base_layer) for m in layers]
    deltas = [m.delta_weight("default").detach() for m in layers]
    biases = [m.base_layer.bias.detach().clone() for m in layers]
    torch.testing.assert_close(y0, twin(x, [a + d for a, d in zip(w0, deltas, strict=True)], biases),
                               rtol=1e-5, atol=1e-5)

    with pytest.warns(QuantizedMergeWarning, match="rounds it to the quantization grid"):
        pm.merge_adapter()
    assert all(m.merged == ["default"] for m in layers)
    w1 = [dequantize_weight(m.base_layer) for m in layers]
    for m, a, d, b in zip(layers, w0, deltas, w1, strict=True):
        assert type(m.base_layer.weight).__name__ in ("Params4bit", "Int8Params")
        torch.testing.assert_close(b, roundtrip(m.base_layer, a + d), rtol=0, atol=0)
        assert ((b - (a + d)).abs() <= grid_error_bound(m.base_layer, a + d)).all()
    with torch.no_grad():
        y1 = pm(x)
        first_merged = layers[0](first_in)
    # merged vs unmerged differs by the rounding only: |x·Eᵀ| <= |x|·|E|ᵀ with E the rounding error
    rounding = (w1[0] - (w0[0] + deltas[0])).abs()
    assert ((first_merged - first_unmerged).abs() <= first_in.abs() @ rounding.T + 1e-4).all()
    torch.testing.assert_close(y1, twin(x, w1, biases), rtol=1e-5, atol=1e-5)  # the network with the rounded weights

    with pytest.warns(QuantizedMergeWarning, match="unmerging"):
        pm.unmerge_adapter()
    assert all(m.merged == [] for m in layers)
    w2 = [dequantize_weight(m.base_layer) for m in layers]
    for m, a, d, b, c in zip(layers, w0, deltas, w1, w2, strict=True):
        torch.testing.assert_close(c, roundtrip(m.base_layer, b - d), rtol=0, atol=0)
        assert ((c - a).abs() <= grid_error_bound(m.base_layer, b) + grid_error_bound(m.base_layer, b - d)).all()

    with pytest.warns(QuantizedMergeWarning):
        plain = pm.merge_and_unload()
    assert isinstance(plain, nn.Sequential) and not lora_layers(plain)
    expected = [roundtrip(m.base_layer, c + d) for m, c, d in zip(layers, w2, deltas, strict=True)]
    for i, w in zip((0, 2), expected, strict=True):
        assert type(plain[i]).__name__ in ("Linear4bit", "Linear8bitLt")
        assert torch.equal(dequantize_weight(plain[i]), w)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), twin(x, expected, biases), rtol=1e-5, atol=1e-5)


def test_safe_merge_refuses_nan_and_leaves_the_quantized_weight_alone() -> None:
    _, q = quantized_mlp("nf4")
    pm = sdk.get_peft_model(q, sdk.LoraConfig(r=4, target_modules=["0", "2"]))
    with torch.no_grad():
        lora_layers(pm)[1].lora_B["default"].fill_(float("nan"))
    before = raw_bytes(pm)
    with pytest.raises(sdk.MergeError, match="NaN"), warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizedMergeWarning)
        pm.merge_adapter(safe_merge=True)
    assert all(m.merged == [] for m in lora_layers(pm))
    after = raw_bytes(pm)
    for k in before:  # the first layer was merged and restored (within rounding), the NaN one never touched
        if k.startswith("base_model.2."):
            assert torch.equal(before[k], after[k])


# --- several adapters, mixed batches --------------------------------------------------------


def test_multiple_adapters_mixed_batches_and_disabling_on_4bit(saved: dict[str, Path]) -> None:
    torch.manual_seed(6)
    pm = sdk.get_peft_model(load_quantized(saved["tiny"], "fp4"),
                            sdk.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False), "a")
    pm.add_adapter("b", sdk.LoraConfig(r=2, target_modules=["v_proj", "o_proj"], init_lora_weights=False))
    pm.eval()
    x = ids(3, 6)
    with torch.no_grad():
        pm.set_adapter("a")
        ya = pm(x).logits
        pm.set_adapter("b")
        yb = pm(x).logits
        pm.set_adapter(["a", "b"])
        yab = pm(x).logits
        with pm.disable_adapter():
            y0 = pm(x).logits
        mixed = pm(x, adapter_names=["a", "__base__", "b"]).logits
    assert (ya - y0).abs().max() > 1e-3 and (yb - y0).abs().max() > 1e-3 and (yab - ya).abs().max() > 1e-3
    torch.testing.assert_close(mixed[0], ya[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[1], y0[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[2], yb[2], rtol=1e-5, atol=1e-5)


# --- prepare_model_for_kbit_training --------------------------------------------------------


def test_prepare_model_for_kbit_training(saved: dict[str, Path]) -> None:
    model = load_quantized(saved["tiny"], "nf4", dtype=torch.bfloat16)
    halves = [n for n, p in model.named_parameters() if p.dtype == torch.bfloat16]
    assert "model.norm.weight" in halves and "lm_head.weight" in halves
    packed_before = raw_bytes(model)
    sdk.prepare_model_for_kbit_training(model)
    for name, p in model.named_parameters():
        assert not p.requires_grad, name
        if name in packed_before:
            assert torch.equal(p, packed_before[name]), name  # quantized weights untouched
        else:
            assert p.dtype == torch.float32, name
    assert model.model.gradient_checkpointing
    assert model.model.layers[0]._gradient_checkpointing_func.keywords == {"use_reentrant": True}
    assert model.model.embed_tokens(ids(1, 3)).requires_grad  # reentrant checkpoints need a grad-requiring input

    torch.manual_seed(7)
    pm = sdk.get_peft_model(model, sdk.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    grads = _lora_grads(pm, ids(2, 8))
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())

    other = sdk.prepare_model_for_kbit_training(
        load_quantized(saved["tiny"], "nf4"), gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    assert other.model.layers[0]._gradient_checkpointing_func.keywords == {"use_reentrant": False}
    plain = sdk.prepare_model_for_kbit_training(load_quantized(saved["tiny"], "int8"), use_gradient_checkpointing=False)
    assert not plain.model.gradient_checkpointing
    with pytest.raises(TypeError, match="use_gradient_checkpointing=False"):
        sdk.prepare_model_for_kbit_training(nn.Sequential(nn.Linear(2, 2)))


# --- interoperability -----------------------------------------------------------------------


def test_round_trip_with_peft_on_a_4bit_model(saved: dict[str, Path], tmp_path: Path) -> None:
    def base() -> LlamaForCausalLM:
        model = load_quantized(saved["tiny"], "nf4")
        # PEFT leaves the repacking on; on AVX512-BF16 CPUs its eval forward would then crash in
        # bitsandbytes for layers narrower than the 64-value block (in_features=32 here)
        keep_trainable_layout_everywhere(model)
        return model

    x = ids(2, 6)
    torch.manual_seed(8)
    theirs = peft.get_peft_model(base(), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                         init_lora_weights=False)).eval()
    assert type(theirs.base_model.model.model.layers[0].self_attn.q_proj).__module__ == "peft.tuners.lora.bnb"
    theirs.save_pretrained(tmp_path / "peft")
    ours = sdk.AdapterModel.from_pretrained(base(), tmp_path / "peft")
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, theirs(x).logits, rtol=0, atol=1e-6)
    ours.save_pretrained(tmp_path / "sdk")
    back = peft.PeftModel.from_pretrained(base(), tmp_path / "sdk").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, ours(x).logits, rtol=0, atol=1e-6)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back.merge_adapter()
        ours.merge_adapter()
    for path in ("layers.0.self_attn.q_proj", "layers.1.self_attn.v_proj"):
        a = back.base_model.model.model.get_submodule(path).base_layer
        b = ours.base_model.model.get_submodule(path).base_layer
        assert torch.equal(dequantize_weight(a), dequantize_weight(b)), path


def test_dora_on_a_quantized_layer_is_refused_clearly() -> None:
    _, q = quantized_mlp("nf4")
    with pytest.raises(sdk.UnsupportedLayerError, match="not supported on Linear4bit layers"):
        sdk.get_peft_model(q, sdk.LoraConfig(r=2, target_modules=["0"], use_dora=True))


def test_keep_trainable_layout_ignores_other_layers() -> None:
    assert keep_trainable_layout(nn.Linear(2, 2)) is False
    _, q = quantized_mlp("int8")
    assert keep_trainable_layout(q[0]) is False
    _, q = quantized_mlp("nf4")
    assert keep_trainable_layout(q[0]) is True and q[0].support_avx512bf16_for_cpu is False


def test_the_sdk_works_without_bitsandbytes(tmp_path: Path) -> None:
    script = """
import sys
sys.modules["bitsandbytes"] = None  # any import of it now fails
import torch, sdk
from sdk.signature import signature_from_model
model = torch.nn.Sequential(torch.nn.Linear(4, 4))
pm = sdk.get_peft_model(model, sdk.LoraConfig(r=2, target_modules=["0"]))
pm.merge_adapter(); pm.unmerge_adapter()
signature_from_model(model)
sdk.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_adalora_on_quantized_layers_trains_allocates_and_merges(quant: str, saved: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """AdaLoRA sits on 4-bit/8-bit layers like LoRA: the loss drops, the rank schedule runs on the
    quantized model, the saved adapter validates against the full-precision signature, and merging
    into the quantized weights stays within the quantizer's rounding of the unmerged output."""
    from sdk.tuners.adalora.bnb import AdaLoraBnbLinear

    model = load_quantized(saved["wide"], quant)
    fp_signature = signature_from_model(wide_llama())
    before = raw_bytes(model)
    cfg = sdk.AdaLoraConfig(init_r=6, target_r=2, tinit=1, tfinal=2, deltaT=1, total_step=8, lora_alpha=8,
                            target_modules=["q_proj", "v_proj"])
    pm = sdk.get_peft_model(model, cfg)
    layers = [m for m in pm.modules() if isinstance(m, AdaLoraBnbLinear)]
    assert len(layers) == 4
    x = ids(2, 12)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    pm.train()
    losses = []
    for step in range(8):
        loss = pm(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        pm.on_step_end(step)
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    assert all(torch.equal(before[k], v) for k, v in raw_bytes(pm).items() if k in before)  # base untouched
    kept = {n: int(m.keep["default"].sum()) for n, m in pm.named_modules() if isinstance(m, AdaLoraBnbLinear)}
    assert sum(kept.values()) == 2 * 4  # the final budget: target_r per module on average
    pm.save_pretrained(tmp_path / "ada")
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "ada" / "adapter_model.safetensors"))
    saved_cfg = sdk.config_from_dict(json.loads((tmp_path / "ada" / "adapter_config.json").read_text()))
    assert check_adapter(fp_signature, saved_cfg, {k: tuple(v.shape) for k, v in tensors.items()}) == []
    pm.eval()
    with torch.no_grad():
        expected = {id(m): roundtrip(m.base_layer, dequantize_weight(m.base_layer) + m.delta_weight("default"))
                    for m in layers}
        with pytest.warns(QuantizedMergeWarning):
            pm.merge_adapter()
    for m in layers:  # exactly bitsandbytes' own rounding of W + ΔW
        assert torch.equal(dequantize_weight(m.base_layer), expected[id(m)])


def test_transformers_trainer_fine_tunes_a_4bit_model_through_the_adapter(saved: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """transformers.Trainer refuses 'purely quantized' models; an AdapterModel says adapters are attached."""
    from transformers import Trainer, TrainingArguments

    from sdk.integrations.transformers import AdapterTrainerCallback

    model = sdk.prepare_model_for_kbit_training(load_quantized(saved["wide"], "nf4"), use_gradient_checkpointing=False)
    pm = sdk.get_peft_model(model, sdk.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    before = {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}
    x = ids(1, 12)
    data = [{"input_ids": x[0], "labels": x[0]} for _ in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=4, learning_rate=1e-2,
                             report_to=[], remove_unused_columns=False, label_names=["labels"], use_cpu=True,
                             save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = Trainer(model=pm, args=args, train_dataset=data, callbacks=[AdapterTrainerCallback()])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert all(not torch.equal(before[n], p) for n, p in pm.named_parameters() if p.requires_grad)
