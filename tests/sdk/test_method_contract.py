"""The contract every registered adapter method meets, as one table.

Each method registered with ``sdk.register_method`` has an entry in :data:`EXAMPLES` (keyed by
``peft_type``; a method without one fails :func:`test_every_registered_method_has_an_example`,
so no method can skip the table). Each example is a config that both ``sdk`` and the real
``peft`` accept with the same keyword arguments, per tiny model. Every row runs the same checks:

1. inject: only the adapter's own tensors are trainable;
2. one training step changes every trainable tensor and no base parameter;
3. save + load into a fresh base model gives identical outputs;
4. merge / unmerge (where the method is mergeable): merged outputs equal unmerged ones, and
   unmerging restores the base weights; a method that cannot merge raises a clear error;
5. round trips with ``peft`` in both directions agree within 1e-5.

Adapters get random trainable tensors (default init, then noise) so that every check can fail.
The GPT-2 model has untied input/output embeddings, so that merging into ``lm_head`` (the only
``nn.Linear`` of GPT-2, which LyCORIS methods need) does not also change the input embedding.

Adding a method: add an :class:`Example` under its ``peft_type`` (prompt-learning methods set
``mergeable=False``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from torch import nn

import sdk
from sdk.formats import adapter_state_dict
from sdk.layers import AdapterModule

ATOL = RTOL = 1e-5
SEQ = 7


def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0,
                     eos_token_id=0, tie_word_embeddings=False)
    return GPT2LMHeadModel(cfg).eval()


MODELS: dict[str, Callable[[], nn.Module]] = {"llama": tiny_llama, "gpt2": tiny_gpt2}


@dataclass(frozen=True)
class Example:
    """Config keyword arguments per model kind, given to sdk's and peft's config class alike."""

    per_model: dict[str, dict[str, Any]]
    mergeable: bool = True
    #: the file holds the output of the trainable tensors, not the tensors themselves (PEFT saves a
    #: prefix projection's or a P-tuning encoder's output), so check 1 cannot match them to saved keys
    saves_output: bool = False
    #: extra keyword arguments only one side needs (e.g. a peft-only field)
    sdk_only: dict[str, Any] = field(default_factory=dict)
    #: keyword arguments every call of the adapted model needs besides ``input_ids`` (Poly's ``task_ids``)
    call: dict[str, Any] = field(default_factory=dict)


# peft_type -> variant -> example. Prompt-learning methods and others add their entries here.
EXAMPLES: dict[str, dict[str, Example]] = {
    "LORA": {
        "lora": Example({"llama": {"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]},
                         "gpt2": {"r": 4, "target_modules": ["c_attn", "c_fc"]}}),
        "dora": Example({"llama": {"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"], "use_dora": True},
                         "gpt2": {"r": 4, "target_modules": ["c_attn", "c_proj"], "use_dora": True}}),
    },
    "IA3": {
        "ia3": Example({
            "llama": {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
            "gpt2": {"target_modules": ["c_attn", "mlp.c_proj"], "feedforward_modules": ["mlp.c_proj"]},
        }),
    },
    "LOHA": {
        "loha": Example({"llama": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"],
                                   "rank_pattern": {"v_proj": 2}},
                         "gpt2": {"r": 4, "target_modules": ["lm_head"]}}),
    },
    "LOKR": {
        "lokr": Example({"llama": {"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]},
                         "gpt2": {"r": 4, "target_modules": ["lm_head"]}}),
        "lokr-decompose-both": Example({
            "llama": {"r": 2, "target_modules": ["q_proj", "down_proj"], "decompose_both": True,
                      "decompose_factor": 4},
            "gpt2": {"r": 2, "target_modules": ["lm_head"], "decompose_both": True, "decompose_factor": 4},
        }),
    },
    # prompt learning: logits also cover the virtual tokens; task_type tells peft to add them
    "PROMPT_TUNING": {
        "prompt-tuning": Example({m: {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM"} for m in ("llama", "gpt2")},
                                 mergeable=False),
    },
    "PREFIX_TUNING": {
        "prefix-tuning": Example({m: {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM"} for m in ("llama", "gpt2")},
                                 mergeable=False),
        "prefix-projection": Example(
            {m: {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "prefix_projection": True,
                 "encoder_hidden_size": 16} for m in ("llama", "gpt2")},
            mergeable=False, saves_output=True),
    },
    "P_TUNING": {
        "p-tuning": Example({m: {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "encoder_hidden_size": 16}
                             for m in ("llama", "gpt2")}, mergeable=False, saves_output=True),
    },
    # Poly adapts nn.Linear only (as in PEFT): GPT-2's lm_head; every call names a task per sample
    "POLY": {
        "poly": Example({"llama": {"r": 4, "n_tasks": 3, "n_skills": 2, "n_splits": 2, "task_type": "CAUSAL_LM",
                                   "target_modules": ["q_proj", "v_proj", "down_proj"]},
                         "gpt2": {"r": 4, "n_tasks": 3, "n_skills": 2, "task_type": "CAUSAL_LM",
                                  "target_modules": ["lm_head"]}},
                        mergeable=False, call={"task_ids": torch.tensor([0, 2, 1])}),
    },
    "ADALORA": {
        "adalora": Example({
            "llama": {"init_r": 4, "target_r": 2, "total_step": 10, "target_modules": ["q_proj", "v_proj"]},
            "gpt2": {"init_r": 4, "target_r": 2, "total_step": 10, "target_modules": ["c_attn"]},
        }),
    },
}

ROWS = [
    pytest.param(method, variant, model, id=f"{variant}-{model}")
    for method, variants in EXAMPLES.items()
    for variant, example in variants.items()
    for model in example.per_model
]


def test_every_registered_method_has_an_example() -> None:
    missing = sorted(set(sdk.registered_methods()) - set(EXAMPLES))
    assert not missing, (
        f"registered methods without an entry in tests/sdk/test_method_contract.py EXAMPLES: {missing}; "
        "add one so the method runs through the contract table"
    )


# --- helpers -------------------------------------------------------------------------------------


def _fresh(model: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[model]()


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return {"input_ids": torch.randint(0, 100, (3, SEQ), generator=g)}


@torch.no_grad()
def _out(model: nn.Module, call: dict[str, Any] | None = None) -> torch.Tensor:
    return model(**_inputs(), **(call or {})).logits


def _sdk_config(method: str, variant: str, model: str) -> Any:
    example = EXAMPLES[method][variant]
    return sdk.get_method(method).config_cls(**example.per_model[model], **example.sdk_only)


def _peft_config(method: str, variant: str, model: str) -> Any:
    cls = peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING[method]
    return cls(**EXAMPLES[method][variant].per_model[model])


@torch.no_grad()
def _randomise(model: nn.Module, seed: int) -> None:
    """Noise on every trainable tensor, so the adapter is not a no-op and every factor matters."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}\n{m}")


def _build(method: str, variant: str, model: str) -> sdk.AdapterModel:
    wrapped = sdk.get_peft_model(_fresh(model), _sdk_config(method, variant, model))
    _randomise(wrapped, seed=1)
    return wrapped


# --- the table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "variant", "model"), ROWS)
def test_inject_and_train_one_step(method: str, variant: str, model: str) -> None:
    wrapped = _build(method, variant, model)
    owned = {id(t) for t in adapter_state_dict(wrapped.base_model, "default", wrapped.peft_config["default"],
                                                sdk.get_method(method).tuner).values()}
    trainable = {n: p for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable, "the adapter has no trainable tensor"
    assert EXAMPLES[method][variant].saves_output or all(id(p) in owned for p in trainable.values()), (
        f"trainable tensors that the adapter does not save: {[n for n, p in trainable.items() if id(p) not in owned]}"
    )
    frozen = {n: p.detach().clone() for n, p in wrapped.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in trainable.items()}

    wrapped.train()
    optim = torch.optim.AdamW(list(trainable.values()), lr=1e-2)
    ids = _inputs()["input_ids"]
    loss = wrapped(input_ids=ids, labels=ids, **EXAMPLES[method][variant].call).loss
    loss.backward()
    optim.step()

    unchanged = [n for n, p in trainable.items() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"one training step left these adapter tensors unchanged: {unchanged}"
    moved = [n for n, p in wrapped.named_parameters() if n in frozen and not torch.equal(p.detach(), frozen[n])]
    assert not moved, f"one training step changed base parameters: {moved}"


@pytest.mark.parametrize(("method", "variant", "model"), ROWS)
def test_save_load_identical(method: str, variant: str, model: str, tmp_path: Path) -> None:
    call = EXAMPLES[method][variant].call
    wrapped = _build(method, variant, model).eval()
    expected = _out(wrapped, call)
    assert (expected[:, -SEQ:] - _out(_fresh(model))).abs().max() > 1e-3, "the adapter does not change the output"
    wrapped.save_pretrained(tmp_path)
    loaded = sdk.AdapterModel.from_pretrained(_fresh(model), tmp_path)
    assert torch.equal(_out(loaded, call), expected)


@pytest.mark.parametrize(("method", "variant", "model"), ROWS)
def test_merge_unmerge(method: str, variant: str, model: str) -> None:
    call = EXAMPLES[method][variant].call
    wrapped = _build(method, variant, model).eval()
    expected = _out(wrapped, call)
    if not EXAMPLES[method][variant].mergeable:
        with pytest.raises(sdk.AdapterError, match="merge"):
            wrapped.merge_adapter()
        return
    weights = {n: p.detach().clone() for n, p in wrapped.base_model.named_parameters() if not p.requires_grad}
    wrapped.merge_adapter()
    changed = [n for n, p in wrapped.base_model.named_parameters() if n in weights and not torch.equal(p, weights[n])]
    assert changed, "merge_adapter changed no base weight"
    _close(_out(wrapped, call), expected, "merged vs unmerged outputs")
    wrapped.unmerge_adapter()
    for n, p in wrapped.base_model.named_parameters():
        if n in weights:
            _close(p.detach(), weights[n], f"{n} after unmerge")
    _close(_out(wrapped, call), expected, "outputs after unmerge")
    plain = copy.deepcopy(wrapped).merge_and_unload()
    assert not any(isinstance(m, AdapterModule) for m in plain.modules())
    _close(_out(plain, call), expected, "merge_and_unload outputs")


@pytest.mark.parametrize(("method", "variant", "model"), ROWS)
def test_peft_round_trips(method: str, variant: str, model: str, tmp_path: Path) -> None:
    call = EXAMPLES[method][variant].call
    # sdk -> peft
    ours = _build(method, variant, model).eval()
    ours.save_pretrained(tmp_path / "sdk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(_fresh(model), tmp_path / "sdk").eval()
    _close(_out(theirs, call), _out(ours, call), "peft loading the sdk adapter")

    # peft -> sdk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = peft.get_peft_model(_fresh(model), _peft_config(method, variant, model))
    _randomise(made, seed=2)
    made.eval()
    expected = _out(made, call)
    assert (expected[:, -SEQ:] - _out(_fresh(model))).abs().max() > 1e-3, "the peft adapter does not change the output"
    made.save_pretrained(tmp_path / "peft")
    loaded = sdk.AdapterModel.from_pretrained(_fresh(model), tmp_path / "peft")
    _close(_out(loaded, call), expected, "sdk loading the peft adapter")
