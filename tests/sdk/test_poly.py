"""Poly (Polytropon): our method against PEFT 0.21's ``PolyModel`` on the same weights and task ids, PEFT's
on-disk format both ways, training with ``sdk.train`` (``task_ids`` in the batch), one graph under Dynamo,
and the errors for missing or bad task ids and layers Poly cannot adapt.

PEFT's Poly adapts ``nn.Linear`` only (``PolyModel._create_new_module`` raises for anything else), so
GPT-2's ``Conv1D`` layers are refused here too; its ``lm_head`` (a Linear) is adapted like PEFT does.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import peft
import pytest
import torch
from _tiny import ToyLM, ids, tiny_gpt2, tiny_llama
from torch import nn

import sdk
from sdk.tuners.poly.router import mixing_weights

KW = {"r": 4, "n_tasks": 3, "n_skills": 4, "n_splits": 2, "init_weights": False, "task_type": "CAUSAL_LM"}
TASKS = torch.tensor([0, 2, 1])


class Mlp(nn.Module):
    """Two Linear layers over (batch, seq, features): PEFT's Poly layer expects a sequence dimension."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def _peft(model: nn.Module, **kw: object) -> peft.PeftModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = peft.get_peft_model(model, peft.PolyConfig(**kw))
    with torch.no_grad():  # every tensor random, B included, so each factor matters
        for name, p in made.named_parameters():
            if "poly_" in name:
                p.normal_(0, 0.3)
    return made.eval()


def _peft_load(model: nn.Module, folder: Path) -> peft.PeftModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(model, folder).eval()


@pytest.mark.parametrize("model", ["llama", "gpt2-lm-head"])
def test_outputs_equal_peft_both_ways(model: str, tmp_path: Path) -> None:
    fresh = tiny_llama if model == "llama" else tiny_gpt2
    targets = ["q_proj", "v_proj", "down_proj"] if model == "llama" else ["lm_head"]
    theirs = _peft(fresh(), target_modules=targets, **KW)
    x = ids()
    with torch.no_grad():
        expected = theirs(input_ids=x, task_ids=TASKS).logits
        assert (expected - fresh()(input_ids=x).logits).abs().max() > 1e-2
    theirs.save_pretrained(tmp_path / "peft")
    ours = sdk.AdapterModel.from_pretrained(fresh(), tmp_path / "peft").eval()
    with torch.no_grad():
        got = ours(input_ids=x, task_ids=TASKS).logits
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        # another assignment of tasks to samples gives another output, equal to PEFT's again
        other = torch.tensor([1, 1, 0])
        torch.testing.assert_close(ours(input_ids=x, task_ids=other).logits,
                                   theirs(input_ids=x, task_ids=other).logits, atol=1e-5, rtol=1e-5)
        assert (ours(input_ids=x, task_ids=other).logits - got).abs().max() > 1e-4
    ours.save_pretrained(tmp_path / "ours")
    back = _peft_load(fresh(), tmp_path / "ours")
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=x, task_ids=TASKS).logits, expected, atol=1e-5, rtol=1e-5)


def test_plain_linear_model_equals_peft() -> None:
    theirs = _peft(Mlp(), target_modules=["up", "down"], r=2, n_tasks=2, n_skills=3, n_splits=1)
    ours = sdk.get_peft_model(Mlp(), sdk.PolyConfig(target_modules=["up", "down"], r=2, n_tasks=2, n_skills=3))
    with torch.no_grad():
        for name, module in ours.base_model.named_modules():
            if hasattr(module, "poly_lora_A"):
                src = theirs.base_model.model.get_submodule(name)
                module.poly_lora_A["default"].copy_(src.poly_lora_A["default"])
                module.poly_lora_B["default"].copy_(src.poly_lora_B["default"])
                module.poly_logits["default"].copy_(src.poly_router["default"].module_logits)
    ours.eval()
    x = torch.randn(4, 5, 8)
    tasks = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        expected = theirs.base_model(x, task_ids=tasks)  # PolyModel.forward hands task_ids to its layers
        assert (expected - Mlp()(x)).abs().max() > 1e-2
        torch.testing.assert_close(ours(x, task_ids=tasks), expected, atol=1e-6, rtol=1e-6)


def test_mixing_weights_follow_peft_router() -> None:
    logits = torch.randn(3, 8)
    ours = mixing_weights(logits, TASKS, 2, 4, training=False)
    gates = torch.sigmoid(logits[TASKS].view(-1, 2, 4))
    torch.testing.assert_close(ours, gates / (gates.sum(-1, keepdim=True) + 1e-12))
    sample = mixing_weights(logits.requires_grad_(), TASKS, 2, 4, training=True)
    torch.testing.assert_close(sample.sum(-1), torch.ones(3, 2))
    sample.pow(2).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # reparameterised: gradients reach the logits


def test_trains_with_sdk_train_and_the_loss_falls() -> None:
    model = sdk.get_peft_model(tiny_llama(), sdk.PolyConfig(r=4, target_modules=["q_proj", "v_proj"], n_tasks=2,
                                                             n_skills=2))
    g = torch.Generator().manual_seed(0)
    data = []
    for i in range(16):
        seq = torch.randint(0, 100, (8,), generator=g)
        data.append({"input_ids": seq, "labels": seq, "task_ids": i % 2})
    result = sdk.train(model, data, max_steps=25, batch_size=4, learning_rate=3e-2, progress=False)
    first, last = result.loss_history[:3], result.loss_history[-3:]
    assert sum(last) / 3 < sum(first) / 3 - 0.05, result.loss_history
    logits = model.base_model.model.layers[0].self_attn.q_proj.poly_logits["default"]
    assert logits.abs().max() > 1e-2  # the router itself learned, not only the skills


def test_one_graph_under_dynamo() -> None:
    model = sdk.get_peft_model(ToyLM(), sdk.PolyConfig(r=2, target_modules=["q_proj", "v_proj"], n_tasks=3,
                                                        n_skills=2, init_weights=False))
    model.add_adapter("other", sdk.PolyConfig(r=2, target_modules=["q_proj"], n_tasks=3, n_skills=2))
    x, tasks = ids(batch=3, seq=6), TASKS
    for mode in ("eval", "train"):
        getattr(model, mode)()
        with torch.no_grad():
            for kwargs in ({}, {"adapter_names": ["default", "__base__", "other"]} if mode == "eval" else {}):
                torch._dynamo.reset()
                report = torch._dynamo.explain(model)(input_ids=x, task_ids=tasks, **kwargs)
                assert report.graph_break_count == 0, [str(b.reason) for b in report.break_reasons]


def test_mixed_batch_equals_each_adapter_alone() -> None:
    model = sdk.get_peft_model(tiny_llama(), sdk.PolyConfig(target_modules=["q_proj"], **KW))
    model.add_adapter("other", sdk.PolyConfig(target_modules=["v_proj"], **KW))
    model.eval()
    x = ids()
    with torch.no_grad():
        mixed = model(input_ids=x, task_ids=TASKS, adapter_names=["default", "other", "__base__"]).logits
        model.set_adapter("default")
        alone = model(input_ids=x, task_ids=TASKS).logits
        model.set_adapter("other")
        other = model(input_ids=x, task_ids=TASKS).logits
        with model.disable_adapter():
            base = model(input_ids=x).logits
    torch.testing.assert_close(mixed[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[1], other[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[2], base[2], atol=1e-5, rtol=1e-5)


def test_generate_repeats_task_ids_for_beams() -> None:
    model = sdk.get_peft_model(tiny_llama(), sdk.PolyConfig(target_modules=["q_proj"], **KW)).eval()
    out = model.generate(input_ids=ids(batch=2, seq=4), task_ids=torch.tensor([0, 2]), max_new_tokens=2,
                         num_beams=2, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 6)


def test_clear_errors() -> None:
    model = sdk.get_peft_model(tiny_llama(), sdk.PolyConfig(target_modules=["q_proj"], **KW)).eval()
    x = ids()
    with pytest.raises(sdk.AdapterStateError, match="needs task_ids"):
        model(input_ids=x)
    with pytest.raises(sdk.AdapterStateError, match=r"in \[0, 3\).*found 3"):
        model(input_ids=x, task_ids=torch.tensor([0, 1, 3]))
    with pytest.raises(sdk.AdapterStateError, match="integer tensor"):
        model(input_ids=x, task_ids=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(sdk.AdapterStateError, match="3 samples"):
        model(input_ids=x, task_ids=torch.tensor([0, 1]))
    with pytest.raises(sdk.MergeError, match="no single ΔW"):
        model.merge_adapter()
    with pytest.raises(sdk.UnsupportedLayerError, match="Conv1D are not supported by Poly"):
        sdk.get_peft_model(tiny_gpt2(), sdk.PolyConfig(target_modules=["c_attn"]))
    with pytest.raises(sdk.TargetingError, match="n_splits=3 must divide"):
        sdk.get_peft_model(tiny_llama(), sdk.PolyConfig(target_modules=["q_proj"], n_splits=3))
    with pytest.raises(sdk.ConfigError, match="n_skills"):
        sdk.PolyConfig(n_skills=0)
    with pytest.raises(sdk.ConfigError, match="poly_type"):
        sdk.PolyConfig(poly_type="mhr")
