"""LoRA layers for ``nn.Linear``, transformers' ``Conv1D``, ``nn.Embedding`` and ``nn.Conv2d``.

Each layer keeps its factors in ``ParameterDict``s keyed by adapter name: ``lora_A[name]`` is
r×in and ``lora_B[name]`` is out×r, as on disk. Mixed batches on linear layers run as two
grouped batched matmuls instead of a Python loop over adapters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers import AdapterLayer, Conv1DFeatures
from ...merging import LayerKind, lora_delta
from ...routing import ROUTING, Routing
from .dora import dora_extra, merged_delta


class LoraLayer(AdapterLayer):
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
        self.scaling: dict[str, float] = {}
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
        self._stack = None
        self._refresh()

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
        a_key, b_key = self.disk_names
        out: dict[str, Tensor] = {a_key: self.lora_A[name], b_key: self.lora_B[name]}
        if name in self.lora_magnitude_vector:
            out["lora_magnitude_vector"] = self.lora_magnitude_vector[name]
        return out

    def _delete(self, name: str) -> None:
        for store in (self.lora_A, self.lora_B):
            del store[name]
        if name in self.lora_magnitude_vector:
            del self.lora_magnitude_vector[name]
        for meta in (self.r, self.scaling, self.dropout_p):
            meta.pop(name, None)
        self._stack = None

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

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self._stack: tuple | None = None  # (names, params, their versions, A stack, B stack)

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        result = self.base_layer(x, *args, **kwargs)
        routing = ROUTING.get()
        if routing is not None:
            return self._mixed(x, result, routing)
        if self.disabled:
            return result
        base_out = result
        for name in self._live:
            if name in self.lora_magnitude_vector:
                result = result + dora_extra(self, x, name, base_out).to(result.dtype)
                continue
            a, b = self.lora_A[name], self.lora_B[name]
            h = F.linear(self._dropout(x, name).to(a.dtype), a)
            flat = h.reshape(-1, h.shape[-1])
            if result.dtype == b.dtype:
                result = torch.addmm(result.reshape(-1, result.shape[-1]), flat, b.t(), alpha=self.scaling[name])
                result = result.view(*h.shape[:-1], -1)
            else:
                result = result + (F.linear(h, b) * self.scaling[name]).to(result.dtype)
        return result

    def _stacked(self, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        """A (U, in, R) and scaled B (U, R, out) for ``names``; zeros where an adapter is absent.

        Cached until the adapters change (checked through the tensors' version counters)."""
        cached = self._stack
        if cached is not None and cached[0] == names and cached[2] == tuple(p._version for p in cached[1]):
            return cached[3], cached[4]
        names = tuple(n if n not in self.lora_magnitude_vector else "" for n in names)  # DoRA: not stacked
        params = [p for n in names if n in self.lora_A for p in (self.lora_A[n], self.lora_B[n])]
        rmax = max((self.r[n] for n in names if n in self.r), default=1)
        ref = params[0] if params else self.base_layer.weight
        dtype = ref.dtype if ref.is_floating_point() else torch.float32
        a_st = torch.zeros(len(names), self.in_features, rmax, dtype=dtype, device=ref.device)
        b_st = torch.zeros(len(names), rmax, self.out_features, dtype=dtype, device=ref.device)
        with torch.no_grad():
            for u, n in enumerate(names):
                if n in self.lora_A:
                    r = self.r[n]
                    a_st[u, :, :r] = self.lora_A[n].t()
                    b_st[u, :r, :] = self.lora_B[n].t() * self.scaling[n]
        self._stack = (names, params, tuple(p._version for p in params), a_st, b_st)
        return a_st, b_st

    def _mixed(self, x: Tensor, result: Tensor, routing: Routing) -> Tensor:
        routing.check_batch(x.shape[0])
        if not routing.unique or not any(n in self.lora_A for n in routing.unique):
            return result
        a_st, b_st = self._stacked(routing.unique)
        gather, keep, target, g = routing.padded(x.device)
        u = len(routing.unique)
        xs = x.index_select(0, gather).to(a_st.dtype).reshape(u, -1, x.shape[-1])
        y = torch.bmm(torch.bmm(xs, a_st), b_st).reshape(u * g, *result.shape[1:])
        if keep is not None:  # drop the padding rows
            y = y.index_select(0, keep)
        out = result.index_add(0, target, y.to(result.dtype))
        for name, idx in routing.indices(x.device).items():
            if name in self.lora_magnitude_vector:
                extra = dora_extra(self, x.index_select(0, idx), name, result.index_select(0, idx))
                out = out.index_add(0, idx, extra.to(out.dtype))
        return out


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
