"""Grouped matmuls for mixed batches: every adapter's samples in one batched matmul, no loop over adapters.

A linear-like adapter layer stacks the weights of the adapters in a batch (``U`` of them, zeros where
it lacks one) and :func:`grouped_linear` multiplies each group of samples (see
:class:`~sdk.routing.Routing`) by its adapter's weights with ``torch.bmm``, then adds the rows back to
their samples with one ``index_add``. The shapes depend only on ``U`` and the group size, so a compiled
graph serves every assignment of adapters to samples with the same group layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .layers import AdapterModule, VersionedCache
from .routing import BASE_ADAPTER, Routing


@dataclass(eq=False)
class GroupedWeights:
    """A layer's weights for the adapters of one mixed batch, in the batch's group order.

    ``a`` is ``(U, in, R)`` and ``b`` ``(U, R, out)`` with the scaling folded in (LoRA), or ``a`` is a full
    ``(U, in, out)`` ΔWᵀ and ``b`` None (LoHa, LoKr). ``dora`` ``(U, 1, out)`` holds DoRA's ``m/‖W+ΔW‖``
    per adapter (1 for adapters without DoRA), or is None when no adapter of the batch uses DoRA here.
    """

    a: Tensor
    b: Tensor | None = None
    dora: Tensor | None = None


def grouped_rows(x: Tensor, index: Tensor, groups: int) -> Tensor:
    """``x``'s rows picked by ``index`` (a routing's gather, flat) as ``(groups, G·rest…, features)``.

    Padding rows repeat a real row; nothing reads their results (the rows go back to their samples by a gather).
    """
    if index.device != x.device:
        index = index.to(x.device)
    return x.index_select(0, index).reshape(groups, -1, x.shape[-1])


def _grid_view(t: Tensor, routing: Routing) -> Tensor | None:
    """``t`` (batch, rows…, features) in the eager group layout ``(U, G·rows, features)`` as a strided view of
    its storage, when the routing's samples lie on a grid (:attr:`Routing.eager_grid`); None when no such view
    exists (another order, ``__base__`` samples, padding, a non-contiguous ``t``, or several rows per sample
    of interleaved groups)."""
    grid = routing.eager_grid
    if grid is None or not t.is_contiguous():
        return None
    su, sj = grid
    feat = t.shape[-1]
    per_sample = t.numel() // max(t.shape[0], 1)
    if per_sample == feat:  # one row per sample
        stride = (su * per_sample, sj * per_sample, 1)
    elif sj == 1:  # a group's samples are adjacent: its rows are one run
        stride = (su * per_sample, feat, 1)
    else:
        return None
    return t.as_strided((routing.eager_groups, per_sample // feat * routing.eager_size, feat), stride)


def _grouped_input(x: Tensor, routing: Routing) -> Tensor:
    """A layer's input in the eager group layout (a view when the samples lie on a grid, else a gather), reused
    while the same unchanged tensor comes again."""
    view = _grid_view(x, routing)
    if view is not None:
        return view
    version = -1 if x.is_inference() else x._version  # inference tensors keep no version counter
    last = routing._gathered
    if last is not None and last[0] is x and last[1] == version:
        return last[2]
    xs = grouped_rows(x, routing.eager_gather, routing.eager_groups)
    routing._gathered = (x, version, xs)
    return xs


def _grid_prefill(x: Tensor, result: Tensor, routing: Routing, a: Tensor, b: Tensor, rows: int) -> bool:
    """Add each sample's adapter into ``result`` in place, reading the samples where they lie, when they lie on a
    grid (:attr:`~sdk.routing.Routing.eager_grid`) and have several rows each (prefill); False when this does not
    apply. In blocks (``(G, 1)``) a group's samples are one contiguous run: one ``bmm`` and one ``baddbmm_`` over
    views. Taking turns (``(1, U)``, sample ``u + U·j``) samples ``j·U … j·U+U−1`` are contiguous and in group
    order: the same two calls for each of the ``G`` grid rows. Either way nothing is gathered or scattered and no
    B is copied per sample; every adapter's weights are read once per grid row, from cache after the first.
    ``rows`` is the number of rows per sample."""
    grid = routing.eager_grid
    if grid is None or not result.is_contiguous():
        return False
    su, sj = grid
    groups, size = routing.eager_groups, routing.eager_size
    if sj != 1 and (su != 1 or sj != groups or rows == 1):
        return False  # one row per sample taking turns: the decode path's single grouped bmm costs less
    batch, out = result.shape[0], result.shape[-1]
    xr = x.reshape(batch, rows, x.shape[-1])
    if xr.dtype != a.dtype:
        xr = xr.to(a.dtype)
    if sj == 1:  # blocks, sample u·G + j: both are views in the group layout (contiguous, so never None)
        into, xs = _grid_view(result, routing), _grid_view(xr, routing)
        assert into is not None and xs is not None
        into.baddbmm_(torch.bmm(xs, a), b)
        return True
    into = result.view(batch, rows, out)
    for j in range(size):  # turns: sample u + U·j
        part = slice(j * groups, (j + 1) * groups)
        into[part].baddbmm_(torch.bmm(xr[part], a), b)
    return True


def _on(t: Tensor, like: Tensor) -> Tensor:
    return t if t.device == like.device else t.to(like.device)


def grouped_linear(x: Tensor, result: Tensor, routing: Routing, w: GroupedWeights, base_out: Tensor | None = None
                   ) -> Tensor:
    """``result`` (the base layer's output) plus each sample's adapter applied to its input ``x``.

    ``base_out`` (the base output without bias) is needed when ``w.dora`` is set. Results go back to their
    samples by a gather (the routing's ``back``) or, eagerly, through a strided view, never a scatter: compiled,
    inductor would turn a scatter into one atomic add per element; eager, ``index_add_`` on CPU runs a parallel
    scatter that costs more than the two matmuls on a busy two-core machine. Eager
    (:func:`_eager_grouped_linear`) uses the routing's tighter layout.
    """
    if torch.compiler.is_compiling():
        return _compiled_grouped_linear(x, result, routing, w, base_out)
    return _eager_grouped_linear(x, result, routing, w, base_out)


def _eager_grouped_linear(x: Tensor, result: Tensor, routing: Routing, w: GroupedWeights,
                          base_out: Tensor | None) -> Tensor:
    """:func:`grouped_linear` in eager mode: the eager layout (no filler group, no minimum group size).

    The input is put in group order (a strided view when the samples lie on a grid,
    :attr:`~sdk.routing.Routing.eager_grid`, else a gather shared by the layers that read the same tensor) and
    the down-projection runs grouped. The up-projection then either runs grouped and its rows are added back
    (through the grid's view into ``result`` without autograd, else gathered), or, when a sample has at least
    half as many rows as the rank (prefill rather than decode), the small down-projected rows go back to their
    samples and each sample's B (picked from the stack) is added into ``result`` by one in-place ``baddbmm``:
    that copies ``batch·r·out`` weights instead of writing and reading twice the ``batch·rows·out`` grouped
    output. Without autograd the sum is made in place (``result`` is the base layer's fresh output), and prefill
    samples on a grid skip every gather (:func:`_grid_prefill`).
    """
    groups = routing.eager_groups
    a, b, dora = w.a, w.b, w.dora
    if a.shape[0] != groups:
        a = a[:groups]
        b = None if b is None else b[:groups]
        dora = None if dora is None else dora[:groups]
    grad = torch.is_grad_enabled()
    batch, out = result.shape[0], result.shape[-1]
    rows = result.numel() // max(batch * out, 1)  # rows per sample (sequence length, or 1)
    prefill = b is not None and dora is None and b.dtype == result.dtype and 2 * rows >= b.shape[1]
    if prefill and not grad and b is not None and _grid_prefill(x, result, routing, a, b, rows):
        return result
    xs = _grouped_input(x, routing)
    h = torch.bmm(xs if xs.dtype == a.dtype else xs.to(a.dtype), a)
    back = _on(routing.eager_back, h)
    if prefill:
        assert b is not None
        hs = h.reshape(-1, rows, h.shape[-1]).index_select(0, back)
        if routing.has_base:  # a __base__ sample's rows point at some other sample's: zero them
            hs = hs.masked_fill_(_on(routing.own, hs).view(-1, 1, 1) == 0, 0)
        bs = b.index_select(0, _on(routing.eager_pick, b))
        if grad or not result.is_contiguous():
            return torch.baddbmm(result.reshape(batch, rows, out), hs, bs).view(result.shape)
        result.view(batch, rows, out).baddbmm_(hs, bs)
        return result
    y = h if b is None else torch.bmm(h, b)
    if dora is not None:
        assert base_out is not None
        base = _grid_view(base_out, routing)  # the base rows where the samples lie on a grid
        if base is None:
            base = grouped_rows(base_out, routing.eager_gather, groups)
        y = (dora - 1) * base.to(y.dtype) + dora * y
    into = None if grad else _grid_view(result, routing)
    if into is not None:  # the grouped rows are added where their samples lie: no gather back
        into.add_(y if y.dtype == result.dtype else y.to(result.dtype))
        return result
    picked = y.reshape(-1, *result.shape[1:]).index_select(0, back)
    if picked.dtype != result.dtype:
        picked = picked.to(result.dtype)
    if routing.has_base:
        picked = picked.masked_fill_(_on(routing.own, picked).view(-1, *([1] * (picked.dim() - 1))) == 0, 0)
    return result + picked if grad else result.add_(picked)


def _compiled_grouped_linear(x: Tensor, result: Tensor, routing: Routing, w: GroupedWeights,
                             base_out: Tensor | None) -> Tensor:
    """:func:`grouped_linear` while compiling: the compiled layout (``gather``, ``back``), whose sizes are dynamic."""
    groups = w.a.shape[0]
    flat = routing.gather.reshape(-1)
    y = torch.bmm(grouped_rows(x, flat, groups).to(w.a.dtype), w.a)
    if w.b is not None:
        y = torch.bmm(y, w.b)
    if w.dora is not None:
        assert base_out is not None
        base = grouped_rows(base_out, flat, groups).to(y.dtype)
        y = (w.dora - 1) * base + w.dora * y
    y = y.reshape(-1, *result.shape[1:])
    rows = y.index_select(0, _on(routing.back, y))
    rows = rows * routing.own.to(device=y.device, dtype=y.dtype).view(-1, *([1] * (y.dim() - 1)))
    return result + rows.to(result.dtype)


#: Above this many adapters in one layer, a mix's stack is built from the adapters directly rather than picked
#: from a stack of all of them (which would hold a second copy of every adapter's weights).
MAX_STACKED_ADAPTERS = 64


class GroupedStacks:
    """A layer's stacked weights: all its adapters' (plus a zero slot), and the running mix's, picked from them.

    A new mix of adapters then costs one ``index_select`` per stacked tensor instead of copying each adapter's
    weights again. Both are rebuilt when a weight they were built from changes in place; :meth:`clear` forgets
    them when the layer's adapters change.
    """

    def __init__(self) -> None:
        self.every: VersionedCache[GroupedWeights] = VersionedCache()
        self.mix: VersionedCache[GroupedWeights] = VersionedCache()

    def clear(self) -> None:
        """Forget both stacks."""
        self.every.clear()
        self.mix.clear()

    def get(self, layer: GroupedLayer, names: tuple[str, ...]) -> GroupedWeights:
        """The stack of ``names`` (one per group; zeros for names the layer lacks), group dimension dynamic."""
        return self.mix.get(names, lambda: self._pick(layer, names))

    def _pick(self, layer: GroupedLayer, names: tuple[str, ...]) -> tuple[GroupedWeights, list[Tensor]]:
        everyone = (*layer.adapter_names(), BASE_ADAPTER)
        if len(everyone) > MAX_STACKED_ADAPTERS + 1:
            picked, sources = layer.stack(names)
        else:
            full = self.every.get(everyone, lambda: layer.stack(everyone))
            slot = {n: i for i, n in enumerate(everyone)}
            index = torch.tensor([slot.get(n, len(everyone) - 1) for n in names], device=full.a.device)
            picked = GroupedWeights(*(None if t is None else t.index_select(0, index)
                                      for t in (full.a, full.b, full.dora)))
            sources = list(self.every.tensors)
        for t in (picked.a, picked.b, picked.dora):
            if t is not None:
                torch._dynamo.mark_dynamic(t, 0)
        return picked, sources


class GroupedLayer(AdapterModule):
    """An adapter layer that stacks its adapters' weights for a mixed batch when the routing begins.

    Subclasses say whether they take part (:meth:`groups_here`) and build a stack (:meth:`stack`);
    :class:`GroupedStacks` keeps it across calls while the batch's adapters and their weights stay the same.
    """

    def __init__(self, base_layer: torch.nn.Module) -> None:
        super().__init__(base_layer)
        self._mix_cache = GroupedStacks()
        self._mix: GroupedWeights | None = None  # this layer's stack for the running mixed batch

    def groups_here(self, routing: Routing) -> bool:
        """Whether this layer runs ``routing`` as grouped matmuls (no: it handles the routing itself)."""
        return False

    def stack(self, names: tuple[str, ...]) -> tuple[GroupedWeights, list[Tensor]]:
        """The weights of ``names`` in that order (zeros for adapters absent here, ``__base__`` among them)
        and the tensors read."""
        raise NotImplementedError

    def begin_routing(self, routing: Routing) -> None:
        super().begin_routing(routing)
        mix = self._mix_cache.get(self, routing.group_names) if self.groups_here(routing) else None
        self.__dict__["_mix"] = mix  # a plain attribute (see begin_routing)

    def end_routing(self) -> None:
        super().end_routing()
        self.__dict__["_mix"] = None
