"""AdapterModel: several adapters, activation, disabling, merging, mixed batches, training."""

from __future__ import annotations

import pytest
import torch
from _tiny import ConvNet, ids, tiny_gpt2, tiny_llama

import sdk


def two_adapters() -> tuple[sdk.AdapterModel, torch.Tensor]:
    m = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                        init_lora_weights=False), "a")
    m.add_adapter("b", sdk.LoraConfig(r=2, target_modules=["k_proj", "v_proj", "embed_tokens"],
                                      init_lora_weights=False))
    return m.eval(), ids()


def logits(m: torch.nn.Module, x: torch.Tensor, **kw: object) -> torch.Tensor:
    with torch.no_grad():
        return m(input_ids=x, **kw).logits


def test_forwarding_and_trainable_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    m = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    assert m.config.model_type == "llama"  # attribute access reaches the wrapped model
    trainable, _ = m.get_nb_trainable_parameters()
    lora = 2 * (4 * 32 + 32 * 4)
    assert trainable == lora + 100 * 32
    assert all(not p.requires_grad for n, p in m.named_parameters() if "lora_" not in n and "copies" not in n)
    m.print_trainable_parameters()
    assert f"trainable params: {trainable:,d}" in capsys.readouterr().out


def test_new_adapter_starts_as_a_no_op() -> None:
    base = tiny_llama()
    x = ids()
    ref = logits(base, x)
    m = sdk.get_peft_model(base, sdk.LoraConfig(r=4, target_modules="all-linear"))
    torch.testing.assert_close(logits(m, x), ref)


def test_switch_combine_disable_and_delete() -> None:
    m, x = two_adapters()
    with m.disable_adapter():
        base = logits(m, x)
    a = logits(m, x)
    m.set_adapter("b")
    b = logits(m, x)
    m.set_adapter(["a", "b"])
    both = logits(m, x)
    assert not torch.allclose(a, base) and not torch.allclose(b, base) and not torch.allclose(a, b)
    # the active deltas add up: check one layer exactly
    layer = m.base_model.model.layers[0].self_attn.v_proj
    h = torch.randn(2, 32)
    with torch.no_grad():
        got = layer(h) - layer.base_layer(h)
        want = sum(h @ layer.delta_weight(n).T for n in ("a", "b"))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(both, a)
    m.delete_adapter("b")
    assert m.adapter_names == ["a"] and m.active_adapters == ["a"]
    torch.testing.assert_close(logits(m, x), a)
    assert type(m.base_model.model.layers[0].self_attn.k_proj).__name__ == "Linear"  # wrapper removed
    assert type(m.base_model.model.embed_tokens).__name__ == "Embedding"


def test_name_errors() -> None:
    m, _ = two_adapters()
    with pytest.raises(sdk.AdapterNameError, match="already exists"):
        m.add_adapter("a", sdk.LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(sdk.AdapterNameError, match="unknown adapter"):
        m.set_adapter("c")
    with pytest.raises(sdk.AdapterNameError, match="invalid adapter name"):
        m.add_adapter("x.y", sdk.LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(sdk.AdapterNameError, match="__base__"):
        m.add_adapter("__base__", sdk.LoraConfig(target_modules=["q_proj"]))
    before = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    for clash in ("half", "training", "to"):  # would collide with torch.nn.Module attributes in the layers
        with pytest.raises(sdk.AdapterNameError, match=r"attribute of torch\.nn\.Module"):
            m.add_adapter(clash, sdk.LoraConfig(target_modules=["q_proj"]))
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == before and m.adapter_names == ["a", "b"]


def test_merge_unmerge_round_trip_and_merged_state_errors() -> None:
    m, x = two_adapters()
    m.set_adapter(["a", "b"])
    before = {k: v.clone() for k, v in m.base_model.state_dict().items() if "base_layer" in k}
    out = logits(m, x)
    m.merge_adapter()
    torch.testing.assert_close(logits(m, x), out, atol=1e-5, rtol=1e-4)
    with pytest.raises(sdk.MergeError, match="unmerge"):
        m.delete_adapter("a")
    with pytest.raises(sdk.MixedBatchError, match="unmerge"):
        logits(m, x, adapter_names=["a", "b", "a"])
    with m.disable_adapter():  # unmerges for the block, merges back after
        torch.testing.assert_close(logits(m, x), logits(tiny_llama(), x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits(m, x), out, atol=1e-5, rtol=1e-4)
    m.unmerge_adapter()
    after = {k: v for k, v in m.base_model.state_dict().items() if "base_layer" in k}
    for k in before:
        torch.testing.assert_close(after[k], before[k], atol=1e-5, rtol=0)  # fp32 round-off
    torch.testing.assert_close(logits(m, x), out, atol=1e-5, rtol=1e-4)


def test_safe_merge_refuses_nan_and_changes_nothing() -> None:
    m, x = two_adapters()
    before = logits(m, x)
    weights = {k: v.clone() for k, v in m.base_model.state_dict().items()}
    with torch.no_grad():
        m.base_model.model.layers[1].self_attn.v_proj.lora_B["a"][0, 0] = float("inf")
    with pytest.raises(sdk.MergeError, match="NaN/Inf"):
        m.merge_adapter(safe_merge=True)
    for k, v in m.base_model.state_dict().items():
        if "base_layer" in k:
            torch.testing.assert_close(v, weights[k])
    with torch.no_grad():
        m.base_model.model.layers[1].self_attn.v_proj.lora_B["a"][0, 0] = 0.0
    m.merge_adapter(safe_merge=True)
    assert not torch.allclose(logits(m, x), before)  # changed B[0,0], so outputs moved a little


def test_merge_and_unload_and_unload() -> None:
    m, x = two_adapters()
    out = logits(m, x)
    plain = m.merge_and_unload()
    assert not any("lora" in n for n, _ in plain.named_parameters())
    torch.testing.assert_close(logits(plain, x), out, atol=1e-5, rtol=1e-4)

    m2, _ = two_adapters()
    restored = m2.unload()
    torch.testing.assert_close(logits(restored, x), logits(tiny_llama(), x))


def test_mixed_batch_matches_per_sample_results() -> None:
    m, _ = two_adapters()
    x = ids(batch=5)
    names = ["a", "b", "__base__", "b", "a"]
    mixed = logits(m, x, adapter_names=names)
    per = {}
    for n in ("a", "b"):
        m.set_adapter(n)
        per[n] = logits(m, x)
    with m.disable_adapter():
        per["__base__"] = logits(m, x)
    for i, n in enumerate(names):
        torch.testing.assert_close(mixed[i], per[n][i], atol=1e-5, rtol=1e-4)


def test_a_new_mix_is_picked_from_the_stack_of_all_adapters_until_a_weight_changes() -> None:
    """Each layer stacks all its adapters once; a new mix of them is picked out of that stack (no new copy of
    every adapter's weights per mix), and an in-place weight update rebuilds it."""
    m, _ = two_adapters()
    m.eval()
    x = ids(batch=4)
    layers = [mod for mod in m.modules() if isinstance(mod, sdk.tuners.lora.layers.LoraLinear)]
    built: list[tuple[str, ...]] = []
    for layer in layers:
        original = layer.stack
        layer.stack = lambda names, original=original: built.append(names) or original(names)  # type: ignore
    mixes = (["a", "b", "a", "b"], ["b", "b", "b", "a"], ["b", "__base__", "b", "b"], ["a", "a", "a", "a"])
    for names in mixes:
        logits(m, x, adapter_names=names)
    # once per layer (its own adapters and the zero slot), for all four mixes
    assert sorted(built) == sorted((*layer.adapter_names(), "__base__") for layer in layers)
    changed = next(layer for layer in layers if "b" in layer.lora_B)
    with torch.no_grad():
        changed.lora_B["b"].mul_(2.0)
    after = logits(m, x, adapter_names=mixes[1])
    assert len(built) == len(layers) + 1  # the changed layer only
    m.set_adapter("b")
    torch.testing.assert_close(after[:3], logits(m, x)[:3], atol=1e-5, rtol=1e-4)


def test_mixed_batch_errors() -> None:
    m, x = two_adapters()
    with pytest.raises(sdk.MixedBatchError, match="3 samples"):
        logits(m, x, adapter_names=["a", "b"])
    with pytest.raises(sdk.AdapterNameError, match="unknown"):
        logits(m, x, adapter_names=["a", "b", "zzz"])
    m.train()
    with pytest.raises(sdk.MixedBatchError, match="eval"):
        logits(m, x, adapter_names=["a", "b", "a"])


def test_generate_with_adapter_names_matches_single_adapter_generation() -> None:
    m = sdk.get_peft_model(tiny_gpt2(), sdk.LoraConfig(r=4, init_lora_weights=False), "a")
    m.add_adapter("b", sdk.LoraConfig(r=4, target_modules=["c_fc"], init_lora_weights=False))
    m.eval()
    x = ids(batch=3, seq=5)
    kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    mixed = m.generate(input_ids=x, adapter_names=["a", "b", "__base__"], **kw)
    singles = []
    for n in ("a", "b"):
        m.set_adapter(n)
        singles.append(m.generate(input_ids=x, **kw))
    with m.disable_adapter():
        singles.append(m.generate(input_ids=x, **kw))
    for i in range(3):
        assert torch.equal(mixed[i], singles[i][i])
    assert not torch.equal(singles[0], singles[2])


def test_training_moves_only_adapter_weights() -> None:
    m = sdk.get_peft_model(ConvNet(), sdk.LoraConfig(r=2, target_modules=["conv", "head"], lora_dropout=0.1,
                                                     modules_to_save=["norm"]))
    m.train()
    frozen = {n: p.clone() for n, p in m.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 3, 8, 8)
    for _ in range(3):
        loss = m(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in m.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert m.base_model.conv.lora_B["default"].abs().sum() > 0  # B left zero-init, so it learned
    assert not torch.equal(m.base_model.norm.copies["default"].weight, m.base_model.norm.base_layer.weight)


def test_inactive_adapter_is_frozen() -> None:
    m, _ = two_adapters()
    m.set_adapter("a")
    assert all(p.requires_grad for p in m.base_model.model.layers[0].self_attn.q_proj.lora_A.values())
    assert not m.base_model.model.layers[0].self_attn.k_proj.lora_A["b"].requires_grad
