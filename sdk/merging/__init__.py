"""Merging adapters as pure functions over tensors and state dicts, shared by the SDK and the registry's jobs.

- :mod:`.deltas`: LoRA's ΔW (scale, layout) and adding it to a weight or a base state dict
- :mod:`.task_arithmetic`: TIES, DARE and magnitude pruning over same-shaped tensors
- :mod:`.combine`: combining LoRA adapters into a new one (PEFT's ``add_weighted_adapter``)
- :mod:`.into_base`: streaming a LoRA adapter into base-model safetensors shards

The adapter layers import this package while the SDK starts, so it re-exports only the light
:mod:`.deltas` names; import the other modules by their own names.
"""

from __future__ import annotations

from .deltas import LayerKind, add_delta, lora_delta, lora_scaling, merge_lora_state_dict

__all__ = ["LayerKind", "add_delta", "lora_delta", "lora_scaling", "merge_lora_state_dict"]
