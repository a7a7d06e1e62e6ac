"""Rewriting one call of the base model so that it sees the active adapter's virtual tokens.

The virtual tokens sit at the start of the sequence (positions ``0..n-1``); the real tokens follow.
On a call that starts a sequence (no cache, or an empty one):

- prompt tuning / P-tuning put the prompt table in front of the token embeddings, so the
  attention mask, ``position_ids``, ``token_type_ids`` and token-level ``labels`` (padded with
  -100) grow by ``n`` columns, and the logits hold ``n`` more positions;
- prefix tuning writes its key/value states into the cache as if ``n`` tokens had been seen; the
  input keeps its length and the mask grows by ``n`` columns.

Later calls on a cache that already holds the virtual tokens (each ``generate`` step after the
first) only get the longer mask and shifted positions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ...errors import AdapterStateError
from .config import PrefixTuningConfig, PromptLearningConfig
from .encoders import VirtualTokenEncoder

IGNORE_INDEX = -100


def cache_length(cache: Any) -> int:
    """Tokens already in a transformers ``Cache`` (0 for none)."""
    if cache is None:
        return 0
    length = getattr(cache, "get_seq_length", None)
    if length is None:
        raise AdapterStateError(
            f"prompt methods need a transformers Cache object as the key/value cache, got {type(cache).__name__}"
        )
    return int(length())


def rewrite_call(
    kwargs: dict[str, Any],
    encoder: VirtualTokenEncoder,
    config: PromptLearningConfig,
    word_embeddings: nn.Module,
    cache_key: str,
    model_config: Any,
) -> dict[str, Any]:
    """The keyword arguments of one base-model call with the virtual tokens added (see the module doc)."""
    ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
    ref = embeds if embeds is not None else ids
    if not isinstance(ref, Tensor) or ref.dim() < 2:
        raise AdapterStateError("prompt methods need `input_ids` or `inputs_embeds` of shape (batch, sequence, ...)")
    batch, length = ref.shape[0], ref.shape[1]
    n = int(config.num_virtual_tokens or 0)
    if cache_key != "past_key_values" and kwargs.get("past_key_values") is not None:
        kwargs[cache_key] = kwargs.pop("past_key_values")  # the name transformers 5 deprecates
    cache = kwargs.get(cache_key)
    fresh = cache_length(cache) == 0

    mask = kwargs.get("attention_mask")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dim() != 2:
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise AdapterStateError(
                f"prompt methods need a 2-D attention mask (batch × sequence), got {shape}; pass the padding mask "
                "and let the model build its own attention mask"
            )
        kwargs["attention_mask"] = torch.cat([mask.new_ones(batch, n), mask], dim=1)
    positions = kwargs.get("position_ids")

    if isinstance(config, PrefixTuningConfig):
        if positions is not None:
            kwargs["position_ids"] = positions + n
        if fresh:
            dtype = word_embeddings.weight.dtype if isinstance(word_embeddings, nn.Embedding) else None
            kwargs[cache_key] = _prefix_cache(cache, encoder.table(), config, batch, dtype, model_config)
        return kwargs

    if not fresh:
        if positions is not None:
            kwargs["position_ids"] = positions + n
        return kwargs
    if embeds is None:
        embeds = word_embeddings(ids)
    prompts = encoder.table().to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
    kwargs["inputs_embeds"] = torch.cat([prompts, embeds], dim=1)
    kwargs["input_ids"] = None
    if positions is not None:
        virtual = torch.arange(n, dtype=positions.dtype, device=positions.device).expand(*positions.shape[:-1], n)
        kwargs["position_ids"] = torch.cat([virtual, positions + n], dim=-1)
    labels = kwargs.get("labels")
    if isinstance(labels, Tensor) and labels.dim() == 2 and labels.shape[1] == length:
        kwargs["labels"] = torch.cat([labels.new_full((batch, n), IGNORE_INDEX), labels], dim=1)
    types = kwargs.get("token_type_ids")
    if isinstance(types, Tensor) and types.dim() == 2:
        kwargs["token_type_ids"] = torch.cat([types.new_zeros(batch, n), types], dim=1)
    return kwargs


def _prefix_cache(
    cache: Any, table: Tensor, config: PrefixTuningConfig, batch: int, dtype: torch.dtype | None, model_config: Any
) -> Any:
    """``cache`` (a new ``DynamicCache`` if None) holding the prefix's keys and values for every layer."""
    from transformers import DynamicCache

    n, layers = int(config.num_virtual_tokens or 0), int(config.num_layers or 0)
    heads = int(config.num_attention_heads or 0)
    head_dim = int(config.token_dim or 0) // heads
    if dtype is not None:
        table = table.to(dtype)
    # rows × (layers·2·heads·head_dim) -> (layers·2, batch, heads, n, head_dim); even entries keys, odd values
    states = table.view(n, layers * 2, heads, head_dim).permute(1, 2, 0, 3).unsqueeze(1)
    states = states.expand(-1, batch, -1, -1, -1).contiguous()
    if cache is None:
        cache = DynamicCache(config=model_config) if model_config is not None else DynamicCache()
    for layer in range(layers):
        cache.update(states[2 * layer], states[2 * layer + 1], layer)
    return cache
