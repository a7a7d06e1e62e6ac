"""bf16 and fp16 base models: adapter weights stay in float32 (as peft's default
``autocast_adapter_dtype=True`` casts them), each layer adds its adapters in float32 and rounds once,
so outputs equal peft's bit for bit; mixed batches and a compiled model agree within the dtype's
tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny import ToyLM, ids, tiny_llama
from peft import PeftModel

import sdk

X = ids(batch=3, seq=6)
HALF = [torch.bfloat16, torch.float16]
#: Two computations that round in another order differ by a few units in the last place after a few layers.
TOL = {torch.bfloat16: {"atol": 1.6e-2, "rtol": 1.6e-2}, torch.float16: {"atol": 1e-3, "rtol": 1e-3}}


def _pair(dtype: torch.dtype, folder: Path, use_dora: bool = False) -> tuple[sdk.AdapterModel, PeftModel]:
    torch.manual_seed(3)
    ours = sdk.get_peft_model(tiny_llama().to(dtype), sdk.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False,
        use_dora=use_dora))
    ours.add_adapter("other", sdk.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    ours.save_pretrained(folder)
    theirs = PeftModel.from_pretrained(tiny_llama().to(dtype), folder)
    theirs.load_adapter(folder / "other", "other")
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_half_precision_base_gives_peft_outputs(dtype: torch.dtype, use_dora: bool, tmp_path: Path) -> None:
    ours, theirs = _pair(dtype, tmp_path, use_dora)
    for model in (ours, theirs):
        assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
        assert model.get_base_model().model.embed_tokens.weight.dtype == dtype
    with torch.no_grad():
        got, want = ours(input_ids=X).logits, theirs(input_ids=X).logits
        assert got.dtype == dtype
        if use_dora:
            torch.testing.assert_close(got, want, **TOL[dtype])
        else:
            assert torch.equal(got, want)
        base = tiny_llama().to(dtype)(input_ids=X).logits
        assert not torch.allclose(got, base)
        names = ["other", "default", "__base__"]
        mixed = ours(input_ids=X, adapter_names=names).logits
        if use_dora:  # peft refuses mixed batches with DoRA: the DoRA sample must get the single-adapter output
            torch.testing.assert_close(mixed[1], got[1], **TOL[dtype])
        else:
            torch.testing.assert_close(mixed, theirs(input_ids=X, adapter_names=names).logits)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_precision_compiled_matches_eager(dtype: torch.dtype) -> None:
    torch.manual_seed(4)
    model = sdk.get_peft_model(ToyLM().to(dtype), sdk.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                  init_lora_weights=False))
    model.add_adapter("other", sdk.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    model.eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(input_ids=X).logits, model(input_ids=X).logits)
        names = ["default", "other", "default"]
        torch.testing.assert_close(compiled(input_ids=X, adapter_names=names).logits,
                                   model(input_ids=X, adapter_names=names).logits)
