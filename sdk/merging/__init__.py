"""Merging adapters as pure functions over tensors and state dicts, shared by the SDK and the registry's jobs.

- :mod:`.deltas`: LoRA's ΔW (scale, layout) and adding it to a weight or a base state dict
- :mod:`.task_arithmetic`: TIES, DARE and magnitude pruning over same-shaped tensors
- :mod:`.lora_keys`: which tensors of a PEFT LoRA state dict are whose factors
- :mod:`.options`: plain :class:`LoraSettings` read from a config, :class:`CombineOptions`, and
  :func:`combinable` (can this adapter be combined, and why not)
- :mod:`.combine`: combining LoRA adapters into a new one (PEFT's ``add_weighted_adapter``)
- :mod:`.into_base`: streaming a LoRA adapter into base-model safetensors shards

The adapter layers import this package while the SDK starts, so it re-exports only the light
names below; import :mod:`.combine` and :mod:`.into_base` by their own names. Saved folders are
read by :mod:`sdk.merge_files`, never here.
"""

from __future__ import annotations

from .deltas import LayerKind, add_delta, lora_delta, lora_scaling, merge_lora_state_dict
from .options import CombineOptions, LoraSettings, combinable

__all__ = [
    "CombineOptions",
    "LayerKind",
    "LoraSettings",
    "add_delta",
    "combinable",
    "lora_delta",
    "lora_scaling",
    "merge_lora_state_dict",
]
