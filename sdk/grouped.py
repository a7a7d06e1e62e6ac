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


def grouped_rows(x: Tensor, routing: Routing, groups: int, zero_pad: bool = True) -> Tensor:
    """``x``'s samples in group order as ``(groups, G·rest…, features)``, padding rows zeroed unless
    ``zero_pad`` is False (when nothing reads them: the compiled path gathers only real rows back)."""
    xs = x.index_select(0, routing.gather.reshape(-1).to(x.device))
    if zero_pad and routing.pad is not None:
        xs = xs * routing.pad.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return xs.reshape(groups, -1, x.shape[-1])


def _grouped_input(x: Tensor, routing: Routing, groups: int) -> Tensor:
    """:func:`grouped_rows` of a layer's input, reused while the same unchanged tensor comes again (eager)."""
    if torch.compiler.is_compiling():
        return grouped_rows(x, routing, groups, zero_pad=False)
    version = -1 if x.is_inference() else x._version  # inference tensors keep no version counter
    last = routing._gathered
    if last is not None and last[0] is x and last[1] == version and last[2].shape[0] == groups:
        return last[2]
    xs = grouped_rows(x, routing, groups)
    routing._gathered = (x, version, xs)
    return xs


def grouped_linear(x: Tensor, result: Tensor, routing: Routing, w: GroupedWeights, base_out: Tensor | None = None
                   ) -> Tensor:
    """``result`` (the base layer's output) plus each sample's adapter applied to its input ``x``.

    ``base_out`` (the base output without bias) is needed when ``w.dora`` is set. Eager, without autograd,
    the rows are added into ``result`` in place (it is the base layer's fresh output). Compiled, they are
    gathered back to their samples (``routing.back``): a scatter would become atomic adds in inductor's
    code, one per element, while a gather fuses into the addition.
    """
    groups = w.a.shape[0]
    y = torch.bmm(_grouped_input(x, routing, groups).to(w.a.dtype), w.a)
    if w.b is not None:
        y = torch.bmm(y, w.b)
    if w.dora is not None:
        assert base_out is not None
        base = grouped_rows(base_out, routing, groups, zero_pad=not torch.compiler.is_compiling()).to(y.dtype)
        y = (w.dora - 1) * base + w.dora * y
    y = y.reshape(-1, *result.shape[1:])
    if torch.compiler.is_compiling():
        rows = y.index_select(0, routing.back.to(y.device))
        rows = rows * routing.own.to(device=y.device, dtype=y.dtype).view(-1, *([1] * (y.dim() - 1)))
        return result + rows.to(result.dtype)
    y = y.to(result.dtype)
    index = routing.gather.reshape(-1).to(result.device)
    if torch.is_grad_enabled():
        return result.index_add(0, index, y)
    return result.index_add_(0, index, y)


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
