"""Tiny models built from configs (random, seeded weights) for SDK tests."""

from __future__ import annotations

import torch
from torch import nn


def tiny_llama(seed: int = 0, layers: int = 2) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


class ConvNet(nn.Module):
    """A small CNN with a Conv2d, a grouped conv, a norm and a Linear head."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.grouped(torch.relu(self.conv(x))).mean(dim=(2, 3))
        return self.head(self.norm(h))


def ids(batch: int = 3, seq: int = 7, seed: int = 123) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 100, (batch, seq), generator=g)


class ToyLM(nn.Module):
    """A one-block language model whose layers carry Llama's projection names: fast to trace with Dynamo.

    Returns transformers' ``CausalLMOutput`` (``loss`` when ``labels`` are given), like a real model.
    """

    def __init__(self, seed: int = 0, vocab: int = 100, width: int = 16) -> None:
        torch.manual_seed(seed)
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, width)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.down_proj = nn.Linear(width, width)
        self.lm_head = nn.Linear(width, vocab)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> object:
        from transformers.modeling_outputs import CausalLMOutput

        h = self.embed_tokens(input_ids)
        h = self.q_proj(h) * torch.sigmoid(self.k_proj(h)) + self.v_proj(h)
        logits = self.lm_head(self.down_proj(torch.relu(h)))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return CausalLMOutput(loss=loss, logits=logits)
