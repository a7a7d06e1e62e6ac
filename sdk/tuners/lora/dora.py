"""DoRA (weight-decomposed LoRA) for LoRA's linear layers (``nn.Linear`` and ``Conv1D``).

The adapted weight is ``m · (W + ΔW) / ‖W + ΔW‖``, row-wise over output features, with the
magnitude vector ``m`` (``lora_magnitude_vector`` on disk, shape ``(out,)``) trained and the
norm treated as a constant in the backward pass (detached, as PEFT does). The layer computes
only the extra output over the base layer's: ``(m/‖·‖ − 1)·(x·Wᵀ) + (m/‖·‖)·s·B·A·x``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError

if TYPE_CHECKING:
    from .layers import LoraLayer


def weight_out_in(layer: LoraLayer, weight: Tensor | None = None) -> Tensor:
    """The base weight (or ``weight``) as out×in, whatever the layer stores."""
    w = layer.base_layer.weight if weight is None else weight
    return w.T if layer.kind == "conv1d" else w


def lora_out_in(layer: LoraLayer, name: str) -> Tensor:
    """s·B·A as out×in."""
    return (layer.lora_B[name] @ layer.lora_A[name]) * layer.scaling[name]


def row_norm(weight_out_in: Tensor) -> Tensor:
    """‖row‖₂ per output feature."""
    return torch.linalg.vector_norm(weight_out_in, dim=1)


def add_magnitude(layer: LoraLayer, name: str) -> None:
    """Give adapter ``name`` its magnitude vector, initialised to ‖W + ΔW‖ so the adapter starts as plain LoRA."""
    if not layer.supports_dora:
        raise ConfigError(
            "use_dora=True is supported on nn.Linear and Conv1D layers only, not on "
            f"{type(layer.base_layer).__name__}; "
            "leave this module out of target_modules or train without DoRA"
        )
    if not layer.base_layer.weight.is_floating_point():
        raise ConfigError("use_dora=True needs a floating-point base weight; quantized layers are not supported")
    a = layer.lora_A[name]
    with torch.no_grad():
        w = weight_out_in(layer).to(a.dtype)
        magnitude = row_norm(w + lora_out_in(layer, name))
    layer.lora_magnitude_vector[name] = nn.Parameter(magnitude)


def dora_extra(layer: LoraLayer, x: Tensor, name: str, base_out: Tensor) -> Tensor:
    """What DoRA adds to the base layer's output ``base_out`` for input ``x`` (same leading shape).

    In training with dropout the base part is recomputed on the dropped-out input, as PEFT does.
    """
    a, b = layer.lora_A[name], layer.lora_B[name]
    scaling = layer.scaling[name]
    magnitude = layer.lora_magnitude_vector[name]
    weight = weight_out_in(layer)
    with torch.no_grad():
        norm = row_norm(weight.to(a.dtype) + lora_out_in(layer, name))
    factor = magnitude / norm
    dropped = layer._dropout(x, name)
    if dropped is x:
        bias = getattr(layer.base_layer, "bias", None)
        base_part = (base_out - bias) if bias is not None else base_out
    else:
        base_part = F.linear(dropped.to(weight.dtype), weight)
    lora_part = F.linear(F.linear(dropped.to(a.dtype), a), b)
    return (factor - 1) * base_part.to(a.dtype) + factor * lora_part * scaling


def merged_delta(layer: LoraLayer, name: str, base_weight: Tensor) -> Tensor:
    """The change merging DoRA adapter ``name`` makes to ``base_weight`` (in the layer's own layout).

    ``base_weight`` is the weight without any merged adapter: ``f·(W + ΔW) − W`` with
    ``f = m/‖W + ΔW‖``, so merged adapters keep adding up as they do unmerged.
    """
    a = layer.lora_A[name]
    with torch.no_grad():
        w = weight_out_in(layer, base_weight).to(a.dtype)
        adapted = w + lora_out_in(layer, name)
        factor = (layer.lora_magnitude_vector[name] / row_norm(adapted)).unsqueeze(1)
        delta = factor * adapted - w
    return delta.T if layer.kind == "conv1d" else delta
