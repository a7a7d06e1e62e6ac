"""LoRA on bitsandbytes-quantized linear layers (QLoRA): ``Linear4bit`` (nf4/fp4) and ``Linear8bitLt``.

The forward, mixed batches, several adapters and enabling/disabling are :class:`LoraLinear`'s:
the base layer is simply called. What differs is access to the base weight when merging, which
:class:`QuantizedMergeMixin` routes through :mod:`sdk.quantization` (dequantize, add ΔW with the
shared merge math, requantize). The mixin knows nothing about LoRA, so other methods whose
layers derive from :class:`~sdk.layers.AdapterLayer` can put it in front of their class too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from ...quantization import keep_trainable_layout, quantization_label, update_quantized_weight
from .layers import LoraLinear

if TYPE_CHECKING:
    from ...layers import AdapterLayer

    _Base = AdapterLayer
else:
    _Base = object


class QuantizedMergeMixin(_Base):
    """Merge/unmerge for an :class:`AdapterLayer` whose ``base_layer`` is a bitsandbytes linear layer.

    All named adapters are applied in one dequantize → add → requantize round, and a
    :class:`~sdk.quantization.QuantizedMergeWarning` says that the result is rounded.
    """

    def merge(self, names: Sequence[str], safe: bool = False) -> list[str]:
        todo = [n for n in dict.fromkeys(names) if n in self.adapter_names() and n not in self.merged]
        with torch.no_grad():
            update_quantized_weight(self.base_layer, [(n, self.merge_delta(n)) for n in todo], safe=safe)
        self.merged.extend(todo)
        self._refresh()
        return todo

    def unmerge(self, names: Sequence[str] | None = None) -> None:
        todo = [n for n in reversed(self.merged) if names is None or n in names]
        with torch.no_grad():
            update_quantized_weight(self.base_layer, [(n, self.unmerge_delta(n)) for n in todo], sign=-1.0)
        for n in todo:
            self.merged.remove(n)
        self._refresh()


class LoraBnbLinear(QuantizedMergeMixin, LoraLinear):
    """LoRA around ``bnb.nn.Linear4bit`` or ``bnb.nn.Linear8bitLt``; the base weight stays quantized and frozen."""

    #: DoRA reads the base weight's row norms in every forward; not done on quantized weights (yet).
    supports_dora: ClassVar[bool] = False

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        keep_trainable_layout(base_layer)  # no-op for 8-bit layers

    def extra_repr(self) -> str:
        return f"quantization={quantization_label(self.base_layer)}"
