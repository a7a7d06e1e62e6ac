"""AdaLoRA on bitsandbytes-quantized linear layers (``Linear4bit``, ``Linear8bitLt``).

The AdaLoRA forward calls its base layer as is, so only merging differs from
:class:`~sdk.tuners.adalora.layers.AdaLoraLinear`: :class:`~sdk.tuners.lora.bnb.QuantizedMergeMixin`
dequantizes, adds ΔW and requantizes (with a warning about rounding).
"""

from __future__ import annotations

from torch import nn

from ...quantization import keep_trainable_layout, quantization_label
from ..lora.bnb import QuantizedMergeMixin
from .layers import AdaLoraLinear


class AdaLoraBnbLinear(QuantizedMergeMixin, AdaLoraLinear):
    """AdaLoRA around ``bnb.nn.Linear4bit`` or ``bnb.nn.Linear8bitLt``; the base stays quantized and frozen."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        keep_trainable_layout(base_layer)  # the AVX512-BF16 trap: keep 4-bit layers backpropagating

    def extra_repr(self) -> str:
        return f"quantization={quantization_label(self.base_layer)}"
