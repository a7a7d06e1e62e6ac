"""The pure state-dict merge (shared with the service) agrees with the SDK's own merge."""

from __future__ import annotations

import pytest
import torch
from _tiny import ids, tiny_gpt2, tiny_llama

import sdk
from sdk.formats import adapter_state_dict
from sdk.merging import merge_lora_state_dict


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_state_dict_merge_matches_merge_and_unload(arch: str) -> None:
    make = tiny_llama if arch == "llama" else tiny_gpt2
    targets = ["q_proj", "o_proj", "embed_tokens"] if arch == "llama" else ["c_attn", "attn.c_proj", "c_fc"]
    cfg = sdk.LoraConfig(r=4, lora_alpha=8, target_modules=targets, rank_pattern={targets[1]: 2},
                         use_rslora=True, init_lora_weights=False)
    m = sdk.get_peft_model(make(), cfg)
    live = adapter_state_dict(m.base_model, "default", cfg, sdk.get_method("LORA").tuner)
    tensors = {k: v.detach() for k, v in live.items()}
    paths = {k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in tensors}
    kinds = {p: ("conv1d" if arch == "gpt2" else "linear") for p in paths}
    merged = merge_lora_state_dict(make().state_dict(), tensors, cfg.scaling_for, kinds=kinds)
    want = m.merge_and_unload().state_dict()
    for k, v in want.items():
        torch.testing.assert_close(merged[k], v, atol=1e-6, rtol=1e-5)
    plain = make()
    plain.load_state_dict(merged)
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids()).logits, m.base_model(input_ids=ids()).logits)


def test_square_conv1d_needs_kinds() -> None:
    cfg = sdk.LoraConfig(r=2, target_modules=["attn.c_proj"], init_lora_weights=False)
    m = sdk.get_peft_model(tiny_gpt2(), cfg)
    tensors = adapter_state_dict(m.base_model, "default", cfg, sdk.get_method("LORA").tuner)
    with pytest.raises(sdk.MergeError, match="Linear or a transposed Conv1D"):
        merge_lora_state_dict(tiny_gpt2().state_dict(), tensors, cfg.scaling_for)
