"""Tiny, seeded models for the SDK tests (nothing is downloaded); the fixtures in conftest.py wrap them.

Import from this module by name (never ``from conftest import``: tests/service has a conftest too).

Each builder seeds the global RNG itself, so two calls give two models with identical weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

SEQ_LEN = 8
BATCH = 5
VOCAB = 100


class TinyConvNet(nn.Module):
    """A conv layer and a linear head: the smallest model with an ``nn.Conv2d`` to adapt."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, kernel_size=3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def _llama(**extra: object) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        **extra,
    )
    return LlamaForCausalLM(cfg)


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0, eos_token_id=0)
    )


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "llama": _llama,
    # Llama with biases in attention and MLP, so that bias="all"/"lora_only" have something to train
    "llama_bias": lambda: _llama(attention_bias=True, mlp_bias=True),
    "gpt2": _gpt2,
    "conv": TinyConvNet,
}


def build_model(kind: str, seed: int = 0) -> nn.Module:
    """A fresh tiny model of ``kind`` in eval mode; same ``seed`` -> same weights."""
    torch.manual_seed(seed)
    return BUILDERS[kind]().eval()


def model_inputs(kind: str, batch: int = BATCH, seed: int = 123) -> dict[str, torch.Tensor]:
    """Keyword inputs for a model of ``kind`` (token ids, or images for the conv net)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "conv":
        return {"x": torch.randn(batch, 3, 8, 8, generator=g)}
    return {"input_ids": torch.randint(0, VOCAB, (batch, SEQ_LEN), generator=g)}
