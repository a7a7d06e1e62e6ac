"""The (IA)³ layer: per-adapter scaling vectors around ``nn.Linear``, ``Conv1D`` or ``nn.Conv2d``.

Each adapter holds one vector ``ia3_l`` stored in PEFT's shape: ``(out, 1)`` for output scaling,
``(1, in)`` for feed-forward (input) scaling, and ``(1, C, 1, 1)`` on Conv2d. Several active
adapters multiply. Merging multiplies the weight (and, for output scaling, the bias) in place;
unmerging divides again, so it is exact only up to round-off and impossible for a zero entry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...errors import MergeError
from ...layers import AdapterLayer, VersionedCache
from ...routing import Routing
from ...targeting import module_kind


class IA3Layer(AdapterLayer):
    """Scales the wrapped layer's output (or input, for feed-forward adapters) by learned vectors."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.ia3_l = nn.ParameterDict()
        self.feedforward: dict[str, bool] = {}
        self.kind = module_kind(base_layer)
        self._mix_cache: VersionedCache[tuple[Tensor | None, Tensor | None]] = VersionedCache()
        #: Per-slot input and output scales of the running mixed batch (row 0: ones, for ``__base__``).
        self._mix: tuple[Tensor | None, Tensor | None] = (None, None)

    # --- shapes -------------------------------------------------------------------------
    @property
    def in_features(self) -> int:
        w = self.base_layer.weight
        return w.shape[0] if self.kind == "Conv1D" else w.shape[1] * getattr(self.base_layer, "groups", 1)

    @property
    def out_features(self) -> int:
        w = self.base_layer.weight
        return w.shape[1] if self.kind == "Conv1D" else w.shape[0]

    @staticmethod
    def vector_shape(kind: str, feedforward: bool, in_f: int, out_f: int) -> tuple[int, ...]:
        """PEFT's shape of ``ia3_l`` for a layer of ``kind``."""
        n = in_f if feedforward else out_f
        if kind == "Conv2d":
            return (1, n, 1, 1)
        return (1, n) if feedforward else (n, 1)

    # --- adapters ------------------------------------------------------------------------
    def add(self, name: str, feedforward: bool, init_ones: bool) -> None:
        """Create adapter ``name``: ones (a no-op) unless ``init_ones`` is False (random, for tests)."""
        w = self.base_layer.weight
        dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) or not w.is_floating_point() else w.dtype
        shape = self.vector_shape(self.kind, feedforward, self.in_features, self.out_features)
        vec = torch.ones(shape, dtype=dtype, device=w.device) if init_ones else torch.randn(shape, dtype=dtype,
                                                                                             device=w.device)
        self.ia3_l[name] = nn.Parameter(vec)
        self.feedforward[name] = feedforward
        self._mix_cache.clear()
        self._refresh()

    def adapter_names(self) -> list[str]:
        return list(self.ia3_l.keys())

    def adapter_tensors(self, name: str) -> dict[str, Tensor]:
        return {"ia3_l": self.ia3_l[name]}

    def _delete(self, name: str) -> None:
        del self.ia3_l[name]
        self.feedforward.pop(name, None)
        self._mix_cache.clear()

    # --- forward -------------------------------------------------------------------------
    def _scales(self, names: Sequence[str]) -> tuple[Tensor | None, Tensor | None]:
        """Flat input and output scales of ``names`` (products; None when no adapter of that side)."""
        scale_in: Tensor | None = None
        scale_out: Tensor | None = None
        for name in names:
            vec = self.ia3_l[name].flatten()
            if self.feedforward[name]:
                scale_in = vec if scale_in is None else scale_in * vec
            else:
                scale_out = vec if scale_out is None else scale_out * vec
        return scale_in, scale_out

    def _shape_for(self, scale: Tensor, x: Tensor) -> Tensor:
        """Broadcastable view of a per-feature scale: channels are dim 1 on Conv2d, last otherwise."""
        return scale.view(-1, 1, 1) if self.kind == "Conv2d" else scale

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        routing = self._route
        if routing is not None:
            return self._mixed(x, routing, *args, **kwargs)
        if self.disabled or not self._live:
            return self.base_layer(x, *args, **kwargs)
        scale_in, scale_out = self._scales(self._live)
        if scale_in is not None:
            x = (x.to(scale_in.dtype) * self._shape_for(scale_in, x)).to(x.dtype)
        result = self.base_layer(x, *args, **kwargs)
        if scale_out is not None:
            result = (result.to(scale_out.dtype) * self._shape_for(scale_out, result)).to(result.dtype)
        return result

    def begin_routing(self, routing: Routing) -> None:
        super().begin_routing(routing)
        present = any(n in self.ia3_l for n in routing.unique)
        none: tuple[Tensor | None, Tensor | None] = (None, None)
        self._mix = self._mix_cache.get(routing.unique, lambda: self._tables(routing.unique)) if present else none

    def end_routing(self) -> None:
        super().end_routing()
        self._mix = (None, None)

    def _tables(self, names: tuple[str, ...]) -> tuple[tuple[Tensor | None, Tensor | None], list[Tensor]]:
        """(1 + U, features) input and output scales; ones in row 0 and for adapters that leave that side alone."""
        here = [n for n in names if n in self.ia3_l]
        sources = [self.ia3_l[n] for n in here]
        tables: list[Tensor | None] = []
        with torch.no_grad():
            for side_in in (True, False):
                if not any(self.feedforward[n] == side_in for n in here):
                    tables.append(None)
                    continue
                ref = next(self.ia3_l[n] for n in here if self.feedforward[n] == side_in)
                table = torch.ones(1 + len(names), ref.numel(), dtype=ref.dtype, device=ref.device)
                for u, n in enumerate(names):
                    if n in self.ia3_l and self.feedforward[n] == side_in:
                        table[1 + u] = self.ia3_l[n].flatten()
                tables.append(table)
        return (tables[0], tables[1]), sources

    def _per_sample(self, table: Tensor, routing: Routing, like: Tensor) -> Tensor:
        """Each sample's scale, shaped to broadcast over ``like`` (channels are dim 1 on Conv2d, last otherwise)."""
        rows = table.index_select(0, routing.slot.to(table.device))
        if self.kind == "Conv2d":
            return rows.view(like.shape[0], -1, 1, 1)
        return rows.view(like.shape[0], *([1] * (like.dim() - 2)), -1)

    def _mixed(self, x: Tensor, routing: Routing, *args: object, **kwargs: object) -> Tensor:
        routing.check_batch(x.shape[0])
        table_in, table_out = self._mix
        if table_in is not None:
            x = (x.to(table_in.dtype) * self._per_sample(table_in, routing, x)).to(x.dtype)
        result = self.base_layer(x, *args, **kwargs)
        if table_out is not None:
            result = (result.to(table_out.dtype) * self._per_sample(table_out, routing, result)).to(result.dtype)
        return result

    # --- merging: multiplicative ---------------------------------------------------------------
    def weight_factor(self, name: str) -> Tensor:
        """The factor the base weight is multiplied by, broadcastable to its layout."""
        vec = self.ia3_l[name].flatten()
        ff = self.feedforward[name]
        if self.kind == "Conv2d":
            return vec.view(1, -1, 1, 1) if ff else vec.view(-1, 1, 1, 1)
        if self.kind == "Conv1D":  # weight is in×out
            return vec.view(-1, 1) if ff else vec.view(1, -1)
        return vec.view(1, -1) if ff else vec.view(-1, 1)

    def delta_weight(self, name: str) -> Tensor:
        """The change merging ``name`` alone would make to the base weight: W·(l − 1)."""
        w = self.base_layer.weight
        return w * (self.weight_factor(name).to(w.dtype) - 1)

    def merge(self, names: Sequence[str], safe: bool = False) -> list[str]:
        """Multiply the base weight (and the bias, for output scaling) by each named adapter's vector."""
        done: list[str] = []
        base = self.base_layer
        for name in names:
            if name not in self.ia3_l or name in self.merged:
                continue
            factor = self.weight_factor(name).detach()
            bias = getattr(base, "bias", None)
            scale_bias = bias is not None and not self.feedforward[name]
            with torch.no_grad():
                new_w = base.weight * factor.to(base.weight.dtype)
                new_b = bias * factor.flatten().to(bias.dtype) if scale_bias else None
                if safe:
                    if not torch.isfinite(new_w).all() or (new_b is not None and not torch.isfinite(new_b).all()):
                        raise MergeError(f"merging IA3 adapter {name!r} gives NaN/Inf values; the weights were left "
                                         "as they were")
                    if (factor == 0).any():
                        raise MergeError(f"IA3 adapter {name!r} has zero entries; merging it could not be undone "
                                         "(unmerge divides by the vector)")
                base.weight.copy_(new_w)
                if new_b is not None:
                    bias.copy_(new_b)
            self.merged.append(name)
            done.append(name)
        self._refresh()
        return done

    def unmerge(self, names: Sequence[str] | None = None) -> None:
        """Divide merged vectors out again, newest first."""
        base = self.base_layer
        for name in list(reversed(self.merged)):
            if names is not None and name not in names:
                continue
            factor = self.weight_factor(name).detach()
            bias = getattr(base, "bias", None)
            with torch.no_grad():
                base.weight.copy_(base.weight / factor.to(base.weight.dtype))
                if bias is not None and not self.feedforward[name]:
                    bias.copy_(bias / factor.flatten().to(bias.dtype))
            self.merged.remove(name)
        self._refresh()
