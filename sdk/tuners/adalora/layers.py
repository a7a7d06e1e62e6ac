"""AdaLoRA layers: the SVD-form update P·(Λ⊙Q) around ``nn.Linear``, ``Conv1D`` and ``nn.Conv2d``.

Per adapter a layer holds Q = ``lora_A`` (r×in), Λ = ``lora_E`` (r×1) and P = ``lora_B``
(out×r), named and shaped as on disk. Pruning zeroes entries of Λ; the factors keep their
full size in memory, and :meth:`AdaLoraLayer.adapter_tensors` cuts them to the kept triplets
when the tuner has recorded a mask, which is what PEFT writes to disk.

The base layer is always called as ``base_layer(x, *args, **kwargs)``, so a quantized base
layer (bitsandbytes) can sit inside an :class:`AdaLoraLinear` unchanged.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers import AdapterLayer, Conv1DFeatures

Kind = Literal["linear", "conv1d", "conv2d"]


class AdaLoraLayer(AdapterLayer):
    """Shared state and math of the AdaLoRA layer kinds."""

    kind: ClassVar[Kind] = "linear"

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_E = nn.ParameterDict()
        self.r: dict[str, int] = {}
        self.ranknum: dict[str, int] = {}  # the rank ΔW is divided by: init_r, also after pruning
        self.scaling: dict[str, float] = {}  # alpha / (ranknum + 1e-5), folded into one number
        self.dropout_p: dict[str, float] = {}
        #: Kept-triplet masks recorded by the rank allocator: what ``adapter_tensors`` saves.
        self.keep: dict[str, Tensor] = {}
        #: Importance EMAs per adapter and factor name: (smoothed sensitivity, smoothed uncertainty).
        self.importance: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}

    # --- dimensions -------------------------------------------------------------------------
    @property
    def in_features(self) -> int:
        """Width of Q's rows."""
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    # --- adapters ---------------------------------------------------------------------------
    def add(self, name: str, r: int, ranknum: int, scaling: float, dropout: float, init: bool | str) -> None:
        """Create adapter ``name`` with ``r`` triplets (Λ = 0, P and Q ~ N(0, 0.02) unless ``init`` is False)."""
        w = self.base_layer.weight
        dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) or not w.is_floating_point() else w.dtype
        a = torch.randn(r, self.in_features, dtype=dtype, device=w.device)
        e = torch.randn(r, 1, dtype=dtype, device=w.device)
        b = torch.randn(self.out_features, r, dtype=dtype, device=w.device)
        if init:
            nn.init.zeros_(e)
            nn.init.normal_(a, mean=0.0, std=0.02)
            nn.init.normal_(b, mean=0.0, std=0.02)
        self.lora_A[name] = nn.Parameter(a)
        self.lora_E[name] = nn.Parameter(e)
        self.lora_B[name] = nn.Parameter(b)
        self.r[name] = r
        self.ranknum[name] = ranknum
        self.scaling[name] = scaling
        self.dropout_p[name] = float(dropout)
        self._refresh()

    def adapter_names(self) -> list[str]:
        return list(self.lora_A.keys())

    def adapter_parameters(self, name: str) -> list[nn.Parameter]:
        return [self.lora_A[name], self.lora_B[name], self.lora_E[name]]

    def adapter_tensors(self, name: str) -> dict[str, Tensor]:
        """On-disk tensors: the live parameters, or copies cut to the kept triplets once a mask is recorded."""
        a, b, e = self.lora_A[name], self.lora_B[name], self.lora_E[name]
        keep = self.keep.get(name)
        if keep is None or bool(keep.all()):
            return {"lora_A": a, "lora_B": b, "lora_E": e}
        keep = keep.to(a.device)
        return {"lora_A": a.detach()[keep], "lora_B": b.detach()[:, keep], "lora_E": e.detach()[keep]}

    def full_rank(self, name: str) -> bool:
        """Whether the adapter still has all ``init_r`` triplets (pruning applies), i.e. was not loaded cut."""
        return self.r[name] == self.ranknum[name]

    def _delete(self, name: str) -> None:
        for store in (self.lora_A, self.lora_B, self.lora_E):
            del store[name]
        for meta in (self.r, self.ranknum, self.scaling, self.dropout_p, self.keep, self.importance):
            meta.pop(name, None)

    # --- math -------------------------------------------------------------------------------
    def delta_matrix(self, name: str) -> Tensor:
        """P·(Λ⊙Q)·scaling as an out×(in…) matrix."""
        return (self.lora_B[name] @ (self.lora_A[name] * self.lora_E[name])) * self.scaling[name]

    def delta_weight(self, name: str) -> Tensor:
        return self.delta_matrix(name)

    def _dropout(self, x: Tensor, name: str) -> Tensor:
        p = self.dropout_p[name]
        return F.dropout(x, p, self.training) if p > 0.0 and self.training else x

    def _update(self, x: Tensor, name: str) -> Tensor:
        """The adapter's contribution to the output for input ``x``."""
        a = self.lora_A[name]
        h = F.linear(self._dropout(x, name).to(a.dtype), a * self.lora_E[name])
        return F.linear(h, self.lora_B[name]) * self.scaling[name]

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        return self.add_updates(x, self.base_layer(x, *args, **kwargs), self._update)


class AdaLoraLinear(AdaLoraLayer):
    """AdaLoRA around ``nn.Linear``."""


class AdaLoraConv1D(Conv1DFeatures, AdaLoraLayer):
    """AdaLoRA around transformers' ``Conv1D`` (GPT-2), whose weight is stored in×out."""

    kind: ClassVar[Kind] = "conv1d"

    def delta_weight(self, name: str) -> Tensor:
        return self.delta_matrix(name).T


class AdaLoraConv2d(AdaLoraLayer):
    """AdaLoRA around ``nn.Conv2d``: Q is r×(in·kh·kw) and ΔW is reshaped to the kernel's shape."""

    kind: ClassVar[Kind] = "conv2d"

    @property
    def in_features(self) -> int:
        kh, kw = self.base_layer.kernel_size
        return self.base_layer.in_channels * kh * kw

    @property
    def out_features(self) -> int:
        return self.base_layer.out_channels

    def delta_weight(self, name: str) -> Tensor:
        return self.delta_matrix(name).reshape(self.base_layer.weight.shape)

    def _update(self, x: Tensor, name: str) -> Tensor:
        base = self.base_layer
        a = self.lora_A[name]
        return F.conv2d(
            self._dropout(x, name).to(a.dtype), self.delta_weight(name), None, base.stride, base.padding,
            base.dilation, base.groups,
        )


#: AdaLoRA layer class per module kind (as named in signatures).
LAYER_BY_KIND: dict[str, type[AdaLoraLayer]] = {
    "Linear": AdaLoraLinear,
    "Conv1D": AdaLoraConv1D,
    "Conv2d": AdaLoraConv2d,
}


def width_for(kind: str, in_features: int, kernel: tuple[int, ...] | None) -> int:
    """Width of Q (``lora_A``'s second dimension) on a module of ``kind``."""
    if kind == "Conv2d" and kernel:
        return in_features * kernel[0] * kernel[1]
    return in_features
