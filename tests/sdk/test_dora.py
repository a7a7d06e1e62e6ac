"""DoRA specifics: the magnitude vector, the detached norm, unsupported layers, mixed batches, merges."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny import ids, tiny_llama
from safetensors.torch import load_file
from torch import nn

import sdk
from sdk.signature import check_adapter, signature_from_model

CFG = {"r": 4, "target_modules": ["q_proj", "v_proj"], "use_dora": True, "init_lora_weights": False}


@torch.no_grad()
def _logits(model: nn.Module, **kw: object) -> torch.Tensor:
    return model(input_ids=ids(), **kw).logits


def test_magnitude_starts_at_the_row_norm_and_is_saved_as_peft_does(tmp_path: Path) -> None:
    model = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(**CFG))
    layer = model.base_model.model.layers[0].self_attn.v_proj
    adapted = layer.base_layer.weight + layer.delta_weight("default")
    torch.testing.assert_close(layer.lora_magnitude_vector["default"].detach(), adapted.norm(dim=1))
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert tuple(saved["base_model.model.model.layers.0.self_attn.v_proj.lora_magnitude_vector"].shape) == (16,)
    shapes = {k: tuple(v.shape) for k, v in saved.items()}
    sig = signature_from_model(tiny_llama())
    assert check_adapter(sig, model.peft_config["default"], shapes) == []
    key = "base_model.model.model.layers.0.self_attn.v_proj.lora_magnitude_vector"
    problems = check_adapter(sig, model.peft_config["default"], {**shapes, key: (32,)})
    assert [p.tensor for p in problems] == [key] and "out_features is 32, expected 16" in problems[0].message


def test_gradients_treat_the_norm_as_a_constant() -> None:
    torch.manual_seed(0)
    model = sdk.get_peft_model(nn.Sequential(nn.Linear(8, 6)), sdk.LoraConfig(r=2, target_modules=["0"],
                                                                                 use_dora=True,
                                                                                 init_lora_weights=False))
    layer = model.base_model[0]
    with torch.no_grad():
        layer.lora_magnitude_vector["default"].mul_(1.5)
    x = torch.randn(5, 8)
    model(x).pow(2).sum().backward()
    a, b, m = (t.detach().clone().requires_grad_(True) for t in (layer.lora_A["default"], layer.lora_B["default"],
                                                                 layer.lora_magnitude_vector["default"]))
    w, bias, s = layer.base_layer.weight, layer.base_layer.bias, layer.scaling["default"]
    adapted = w + s * b @ a
    manual = (m / adapted.norm(dim=1).detach()) * (x @ adapted.T) + bias
    manual.pow(2).sum().backward()
    for ours, ref in ((layer.lora_A["default"], a), (layer.lora_B["default"], b),
                      (layer.lora_magnitude_vector["default"], m)):
        torch.testing.assert_close(ours.grad, ref.grad, atol=1e-5, rtol=1e-5)


def test_layers_without_dora_are_refused_with_the_reason() -> None:
    with pytest.raises(sdk.AdapterError, match=r"DoRA .*not supported on Embedding"):
        sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"],
                                                        use_dora=True))


def test_mixed_batches_and_merges_with_dora_and_plain_lora() -> None:
    model = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(**CFG))
    model.add_adapter("plain", sdk.LoraConfig(**{**CFG, "use_dora": False}))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "magnitude" in n:
                p.mul_(1.2)
    model.eval()
    base = _logits(tiny_llama())
    outs = {}
    for name in ("default", "plain"):
        model.set_adapter(name)
        outs[name] = _logits(model)
    mixed = _logits(model, adapter_names=["default", "plain", "__base__"])  # PEFT refuses DoRA here
    for i, ref in enumerate((outs["default"], outs["plain"], base)):
        torch.testing.assert_close(mixed[i], ref[i], atol=1e-5, rtol=1e-5)

    model.set_adapter(["plain", "default"])
    both = _logits(model)
    model.merge_adapter(["plain"])  # plain first, so DoRA must rescale the base weight alone
    model.merge_adapter(["default"])
    torch.testing.assert_close(_logits(model), both, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(_logits(model), both, atol=1e-5, rtol=1e-5)
    with model.disable_adapter():
        torch.testing.assert_close(_logits(model), base, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seq", [1, 3])
def test_dora_mixed_batch_on_a_grid_reads_its_base_rows_in_place(seq: int) -> None:
    """Samples taking turns between a DoRA and a plain adapter: each gets its own adapter's output, and at one
    row per sample the base rows DoRA rescales are read through a view, not gathered."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Gathers(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.n += func.overloadpacket.__name__ == "index_select"
            return func(*args, **(kwargs or {}))

    model = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(**CFG))
    model.add_adapter("plain", sdk.LoraConfig(**{**CFG, "use_dora": False}))
    model.eval()
    names = ["default", "plain"] * 2
    x = ids(batch=4, seq=seq, seed=2)
    want = []
    with torch.no_grad():
        for i, n in enumerate(names):
            model.set_adapter(n)
            want.append(model(input_ids=x[i : i + 1]).logits)
        model(input_ids=x, adapter_names=names)  # the first call of a mix picks its stacks
        log = Gathers()
        with log:
            got = model(input_ids=x, adapter_names=names).logits
    torch.testing.assert_close(got, torch.cat(want), atol=1e-5, rtol=1e-5)
    # several rows per sample taking turns have no view: per layer, q/v's shared input once, then for q and v
    # each the base rows and the rows back
    assert log.n == (0 if seq == 1 else 2 * (1 + 2 * 2))
