"""LoRA layers for ``nn.Linear``, transformers' ``Conv1D``, ``nn.Embedding`` and ``nn.Conv2d``.

Each layer keeps its factors in ``ParameterDict``s keyed by adapter name: ``lora_A[name]`` is
r×in and ``lora_B[name]`` is out×r, as on disk. ``scaling[name]`` is a float, or a 0-d tensor after
:func:`~sdk.hotswap.prepare_model_for_compiled_hotswap` (so a compiled graph reads it as an input).
Mixed batches on linear layers run as two grouped batched matmuls (:mod:`sdk.grouped`) instead of
a Python loop over adapters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import MixedBatchError
from ...grouped import GroupedLayer, GroupedWeights, grouped_linear
from ...layers import AdapterLayer, Conv1DFeatures
from ...merging import LayerKind, lora_delta
from ...routing import Routing
from .arrow import notify_routers
from .dora import dora_extra, lora_out_in, merged_delta, row_norm, weight_out_in


class LoraLayer(GroupedLayer, AdapterLayer):
    """Shared bookkeeping of the LoRA layer kinds."""

    kind: ClassVar[LayerKind]
    #: On-disk suffixes of the A and B factors.
    disk_names: ClassVar[tuple[str, str]] = ("lora_A.weight", "lora_B.weight")
    #: Whether DoRA (``use_dora``) works on this layer kind.
    supports_dora: ClassVar[bool] = False

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_magnitude_vector = nn.ParameterDict()  # DoRA adapters only
        self._dora_merged: dict[str, Tensor] = {}  # what merging each DoRA adapter added
        self.r: dict[str, int] = {}
        self.scaling: dict[str, float | Tensor] = {}
        self.dropout_p: dict[str, float] = {}

    # --- shapes, overridden per kind -----------------------------------------------------
    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @staticmethod
    def shapes_for(
        r: int, in_f: int, out_f: int, kernel: tuple[int, ...] | None = None
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of A and B for rank ``r`` on a layer with these dimensions."""
        return (r, in_f), (out_f, r)

    def factor_shapes(self, r: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of A and B for rank ``r`` on this layer."""
        return self.shapes_for(r, self.in_features, self.out_features, getattr(self.base_layer, "kernel_size", None))

    @staticmethod
    def max_rank_for(in_f: int, out_f: int, kernel: tuple[int, ...] | None = None) -> int:
        """The largest sensible rank: min(fan-in, fan-out)."""
        return min(in_f, out_f)

    def max_rank(self) -> int:
        """The largest sensible rank of this layer."""
        return self.max_rank_for(self.in_features, self.out_features, getattr(self.base_layer, "kernel_size", None))

    # --- adapters --------------------------------------------------------------------------
    def add(self, name: str, r: int, scaling: float, dropout: float, init: bool | str) -> None:
        """Create adapter ``name`` with rank ``r``."""
        w = self.base_layer.weight
        dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) or not w.is_floating_point() else w.dtype
        a_shape, b_shape = self.factor_shapes(r)
        a = torch.empty(a_shape, dtype=dtype, device=w.device)
        b = torch.empty(b_shape, dtype=dtype, device=w.device)
        self._init(a, b, r, init)
        self.lora_A[name] = nn.Parameter(a)
        self.lora_B[name] = nn.Parameter(b)
        self.r[name] = r
        self.scaling[name] = scaling
        self.dropout_p[name] = float(dropout)
        self._mix_cache.clear()
        self._refresh()
        notify_routers(self)

    def _init(self, a: Tensor, b: Tensor, r: int, init: bool | str) -> None:
        if init == "gaussian":
            nn.init.normal_(a, std=1.0 / r)
            nn.init.zeros_(b)
            return
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        if init:
            nn.init.zeros_(b)
        else:  # debugging init: B random too, so the adapter changes outputs from the start
            nn.init.kaiming_uniform_(b, a=math.sqrt(5))

    def adapter_names(self) -> list[str]:
        return list(self.lora_A.keys())

    def adapter_tensors(self, name: str) -> dict[str, Tensor]:
        """A and B at the adapter's own rank: views of the first ``r`` rows/columns when the factors are
        zero-padded for hot-swapping (:mod:`sdk.hotswap`)."""
        a_key, b_key = self.disk_names
        a, b, r = self.lora_A[name], self.lora_B[name], self.r[name]
        out: dict[str, Tensor] = {a_key: a if a.shape[0] == r else a.narrow(0, 0, r),
                                  b_key: b if b.shape[1] == r else b.narrow(1, 0, r)}
        if name in self.lora_magnitude_vector:
            out["lora_magnitude_vector"] = self.lora_magnitude_vector[name]
        return out

    def adapter_parameters(self, name: str) -> list[nn.Parameter]:
        params = [self.lora_A[name], self.lora_B[name]]
        return params + ([self.lora_magnitude_vector[name]] if name in self.lora_magnitude_vector else [])

    def _delete(self, name: str) -> None:
        for store in (self.lora_A, self.lora_B):
            del store[name]
        if name in self.lora_magnitude_vector:
            del self.lora_magnitude_vector[name]
        for meta in (self.r, self.scaling, self.dropout_p):
            meta.pop(name, None)
        self._mix_cache.clear()
        notify_routers(self, removed=name)

    def delta_weight(self, name: str) -> Tensor:
        return lora_delta(self.lora_A[name], self.lora_B[name], self.scaling[name], self.kind)

    def merge_delta(self, name: str) -> Tensor:
        if name not in self.lora_magnitude_vector:
            return self.delta_weight(name)
        weight = self.base_layer.weight.detach()
        for merged in self.merged:  # DoRA rescales the base weight alone, not other merged adapters
            weight = weight - self.unmerge_delta(merged).to(weight.dtype)
        delta = merged_delta(self, name, weight)
        self._dora_merged[name] = delta
        return delta

    def unmerge_delta(self, name: str) -> Tensor:
        if name in self._dora_merged:
            return self._dora_merged[name]
        return self.delta_weight(name)

    def unmerge(self, names: Sequence[str] | None = None) -> None:
        kept = [n for n in self.merged if names is not None and n not in names]
        super().unmerge(names)
        for name in list(self._dora_merged):
            if name not in kept:
                del self._dora_merged[name]

    def _dropout(self, x: Tensor, name: str) -> Tensor:
        p = self.dropout_p[name]
        return F.dropout(x, p, self.training) if p > 0.0 and self.training else x


class LoraLinear(LoraLayer):
    """LoRA around ``nn.Linear`` (and, with ``kind="conv1d"``, transformers' ``Conv1D``)."""

    kind: ClassVar[LayerKind] = "linear"
    supports_dora: ClassVar[bool] = True

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        result = self.base_layer(x, *args, **kwargs)
        routing = self._route
        if routing is not None:
            routing.check_batch(x.shape[0])
            if self._mix is None:
                return result
            return grouped_linear(x, result, routing, self._mix, self._without_bias(result)
                                  if self._mix.dora is not None else None)
        if self.disabled or not self._live:
            return result
        out_dtype = result.dtype
        base_out = result
        routers = self._modules.get("lora_arrow")
        for name in self._live:
            if routers is not None and name in routers:  # Arrow: route each token over the task experts
                result = routers[name](self, x, result, self.dropout_p[name])
                continue
            if name in self.lora_magnitude_vector:
                result = result + dora_extra(self, x, name, base_out)
                continue
            a, b = self.lora_A[name], self.lora_B[name]
            scale = self.scaling[name]
            h = F.linear(self._dropout(x, name).to(a.dtype), a)
            if result.dtype == b.dtype and not isinstance(scale, Tensor):
                flat = h.reshape(-1, h.shape[-1])
                result = torch.addmm(result.reshape(-1, result.shape[-1]), flat, b.t(), alpha=scale)
                result = result.view(*h.shape[:-1], -1)
            else:  # half-precision base: add in the adapter's float32, round once at the end (as PEFT)
                result = result + F.linear(h, b) * scale
        return result.to(out_dtype)

    def _without_bias(self, result: Tensor) -> Tensor:
        bias = getattr(self.base_layer, "bias", None)
        return result - bias if bias is not None else result

    def groups_here(self, routing: Routing) -> bool:
        return any(n in self.lora_A for n in routing.unique)

    def stack(self, names: tuple[str, ...]) -> tuple[GroupedWeights, list[Tensor]]:
        """A (U, in, R), scaled B (U, R, out) and DoRA factors for ``names``; zeros where an adapter is absent."""
        here = [n for n in names if n in self.lora_A]
        routers = self._modules.get("lora_arrow")
        if routers is not None and any(n in routers for n in here):
            raise MixedBatchError("an Arrow router routes every token itself; it cannot be one of adapter_names")
        rmax = max(self.lora_A[n].shape[0] for n in here)
        ref = self.lora_A[here[0]]
        dtype = ref.dtype if ref.is_floating_point() else torch.float32
        a_st = torch.zeros(len(names), self.in_features, rmax, dtype=dtype, device=ref.device)
        b_st = torch.zeros(len(names), rmax, self.out_features, dtype=dtype, device=ref.device)
        dora = None
        sources: list[Tensor] = []
        if any(n in self.lora_magnitude_vector for n in here):
            dora = torch.ones(len(names), 1, self.out_features, dtype=dtype, device=ref.device)
            sources.append(self.base_layer.weight)
        with torch.no_grad():
            for u, n in enumerate(names):
                if n not in self.lora_A:
                    continue
                a, b, scale = self.lora_A[n], self.lora_B[n], self.scaling[n]
                r = a.shape[0]
                a_st[u, :, :r] = a.t()
                b_st[u, :r, :] = b.t() * scale
                sources += [a, b] + ([scale] if isinstance(scale, Tensor) else [])
                if dora is not None and n in self.lora_magnitude_vector:
                    magnitude = self.lora_magnitude_vector[n]
                    weight = weight_out_in(self).detach().to(dtype)
                    dora[u, 0, :] = magnitude / row_norm(weight + lora_out_in(self, n))
                    sources.append(magnitude)
        return GroupedWeights(a_st, b_st, dora), sources


class LoraConv1D(Conv1DFeatures, LoraLinear):
    """LoRA around transformers' ``Conv1D`` (GPT-2), whose weight is stored in×out."""

    kind: ClassVar[LayerKind] = "conv1d"


class LoraEmbedding(LoraLayer):
    """LoRA around ``nn.Embedding``: A is r×vocab, B is dim×r (PEFT's ``lora_embedding_A/B``)."""

    kind: ClassVar[LayerKind] = "embedding"
    disk_names: ClassVar[tuple[str, str]] = ("lora_embedding_A", "lora_embedding_B")

    @property
    def in_features(self) -> int:
        return self.base_layer.num_embeddings

    @property
    def out_features(self) -> int:
        return self.base_layer.embedding_dim

    def _init(self, a: Tensor, b: Tensor, r: int, init: bool | str) -> None:
        if init is False:
            nn.init.normal_(a)
            nn.init.normal_(b)
        else:  # as PEFT: A zero, B normal, so the adapter starts as a no-op
            nn.init.zeros_(a)
            nn.init.normal_(b)

    def _embed(self, x: Tensor, name: str) -> Tensor:
        base = self.base_layer
        after_a = F.embedding(
            x, self.lora_A[name].t(), base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq,
            base.sparse,
        )
        return (after_a @ self.lora_B[name].t()) * self.scaling[name]

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        return self.add_updates(x, self.base_layer(x, *args, **kwargs), self._embed)


class LoraConv2d(LoraLayer):
    """LoRA around ``nn.Conv2d``: A is a conv with the base kernel, B a 1×1 conv."""

    kind: ClassVar[LayerKind] = "conv2d"

    @property
    def in_features(self) -> int:
        return self.base_layer.in_channels

    @property
    def out_features(self) -> int:
        return self.base_layer.out_channels

    @staticmethod
    def shapes_for(
        r: int, in_f: int, out_f: int, kernel: tuple[int, ...] | None = None
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        kh, kw = kernel or (1, 1)
        return (r, in_f, kh, kw), (out_f, r, 1, 1)

    @staticmethod
    def max_rank_for(in_f: int, out_f: int, kernel: tuple[int, ...] | None = None) -> int:
        kh, kw = kernel or (1, 1)
        return min(in_f * kh * kw, out_f)

    def _conv(self, x: Tensor, name: str) -> Tensor:
        base = self.base_layer
        a, b = self.lora_A[name], self.lora_B[name]
        h = F.conv2d(self._dropout(x, name).to(a.dtype), a, None, base.stride, base.padding)
        return F.conv2d(h, b) * self.scaling[name]

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        return self.add_updates(x, self.base_layer(x, *args, **kwargs), self._conv)


#: LoRA layer class per module kind (as named in signatures).
LAYER_BY_KIND: dict[str, type[LoraLayer]] = {
    "Linear": LoraLinear,
    "Conv1D": LoraConv1D,
    "Embedding": LoraEmbedding,
    "Conv2d": LoraConv2d,
}
