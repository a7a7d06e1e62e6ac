"""Building blocks every method shares: the adapter-module protocol, full-copy modules
(``modules_to_save``) and per-sample routing for mixed batches.

``AdapterModel`` finds adapter parameters structurally, by walking modules that derive from
:class:`AdapterModule`, never by matching parameter names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import AdapterStateError, MergeError

BASE_ADAPTER = "__base__"


class AdapterModule(nn.Module):
    """A module that holds per-adapter state around a wrapped ``base_layer``."""

    #: Save this module's tensors under their own names (``prompt_embeddings``) rather than under
    #: ``base_model.model.<path>.`` (PEFT's prompt methods save one top-level tensor).
    top_level_keys: ClassVar[bool] = False

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.active: tuple[str, ...] = ()
        self.disabled = False

    # --- the protocol AdapterModel relies on ------------------------------------------------
    def adapter_names(self) -> list[str]:
        """Adapters present in this module."""
        raise NotImplementedError

    def adapter_tensors(self, name: str) -> dict[str, Tensor]:
        """The adapter's tensors keyed by their on-disk suffix (relative to this module's path)."""
        raise NotImplementedError

    def delete_adapter(self, name: str) -> None:
        """Drop the adapter's state from this module."""
        raise NotImplementedError

    def set_active(self, names: Sequence[str]) -> None:
        """Make ``names`` (those present here) the active adapters, in order."""
        self.active = tuple(n for n in names if n in self.adapter_names())

    def adapter_parameters(self, name: str) -> list[nn.Parameter]:
        """The trainable parameters of one adapter."""
        return [t for t in self.adapter_tensors(name).values() if isinstance(t, nn.Parameter)]

    def prepare_load(self, name: str) -> None:
        """Called before saved tensors are copied into adapter ``name``: a module whose saved form
        differs from its training form (a prompt encoder saved as its output) switches to the saved form."""

    def unwrap(self, merge: bool) -> nn.Module:
        """The plain module to put back in the model on unload (merged first if asked)."""
        raise NotImplementedError


class AdapterLayer(AdapterModule):
    """An adapter module whose adapters add a ΔW to the base layer's weight (mergeable)."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.merged: list[str] = []
        self._live: tuple[str, ...] = ()  # active and not merged: what forward must compute

    def set_active(self, names: Sequence[str]) -> None:
        super().set_active(names)
        self._refresh()

    def _refresh(self) -> None:
        self._live = tuple(n for n in self.active if n not in self.merged)

    def add_updates(self, x: Tensor, result: Tensor, update: Callable[[Tensor, str], Tensor]) -> Tensor:
        """``result`` plus each adapter's contribution ``update(x, name)``: per sample under a mixed-batch
        routing (only the rows routed to an adapter see it), else every live adapter (none while disabled)."""
        routing = ROUTING.get()
        if routing is not None:
            routing.check_batch(x.shape[0])
            names = set(self.adapter_names())
            for name, idx in routing.indices(x.device).items():
                if name in names:
                    result = result.index_add(0, idx, update(x.index_select(0, idx), name).to(result.dtype))
            return result
        if self.disabled:
            return result
        for name in self._live:
            result = result + update(x, name).to(result.dtype)
        return result

    def delta_weight(self, name: str) -> Tensor:
        """ΔW of one adapter in the layout of ``base_layer.weight``."""
        raise NotImplementedError

    def merge_delta(self, name: str) -> Tensor:
        """What merging adapter ``name`` adds to the base weight now (its ΔW unless a method needs more)."""
        return self.delta_weight(name)

    def unmerge_delta(self, name: str) -> Tensor:
        """What unmerging the merged adapter ``name`` subtracts again (what :meth:`merge_delta` added)."""
        return self.delta_weight(name)

    def merge(self, names: Sequence[str], safe: bool = False) -> list[str]:
        """Add the ΔW of each named adapter (present and not merged yet) into the base weight."""
        from ..merging import add_delta

        done: list[str] = []
        weight = self.base_layer.weight
        for name in names:
            if name not in self.adapter_names() or name in self.merged:
                continue
            with torch.no_grad():
                add_delta(weight, self.merge_delta(name), safe=safe, where=f"adapter {name!r}")
            self.merged.append(name)
            done.append(name)
        self._refresh()
        return done

    def unmerge(self, names: Sequence[str] | None = None) -> None:
        """Subtract merged ΔWs again (all, or the named ones), newest first."""
        from ..merging import add_delta

        weight = self.base_layer.weight
        for name in list(reversed(self.merged)):
            if names is not None and name not in names:
                continue
            with torch.no_grad():
                add_delta(weight, self.unmerge_delta(name), sign=-1.0)
            self.merged.remove(name)
        self._refresh()

    def delete_adapter(self, name: str) -> None:
        if name in self.merged:
            raise MergeError(f"adapter {name!r} is merged into the base weights; unmerge it before deleting")
        self._delete(name)
        self.active = tuple(n for n in self.active if n != name)
        self._refresh()

    def _delete(self, name: str) -> None:
        raise NotImplementedError

    def unwrap(self, merge: bool) -> nn.Module:
        if merge:
            self.merge(self.active)
        else:
            self.unmerge()
        return self.base_layer


class Conv1DFeatures:
    """In/out features of an adapter layer around transformers' ``Conv1D`` (GPT-2), whose weight is
    stored in×out, the transpose of ``nn.Linear``'s. Put it first among the layer's bases."""

    base_layer: nn.Module

    @property
    def in_features(self) -> int:
        return self.base_layer.weight.shape[0]

    @property
    def out_features(self) -> int:
        return self.base_layer.weight.shape[1]


class ModulesToSave(AdapterModule):
    """Full trainable copies of a module, one per adapter (PEFT's ``modules_to_save``).

    Saved under the module's own name: the copy's ``weight`` is written as ``<path>.weight``.
    """

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.copies = nn.ModuleDict()

    def add(self, name: str) -> None:
        """Create the copy for adapter ``name`` from the original module."""
        clone = copy.deepcopy(self.base_layer)
        for p in clone.parameters():
            p.requires_grad_(True)
        self.copies[name] = clone

    def adapter_names(self) -> list[str]:
        return list(self.copies.keys())

    def adapter_tensors(self, name: str) -> dict[str, Tensor]:
        return dict(self.copies[name].state_dict(keep_vars=True))

    def delete_adapter(self, name: str) -> None:
        del self.copies[name]
        self.active = tuple(n for n in self.active if n != name)

    def set_active(self, names: Sequence[str]) -> None:
        present = [n for n in names if n in self.copies]
        if len(present) > 1:
            raise AdapterStateError(
                f"adapters {present} each train their own full copy of this module; only one of them can be "
                "active at a time"
            )
        self.active = tuple(present)

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        routing = ROUTING.get()
        if routing is not None:
            return self._mixed(routing, x, *args, **kwargs)
        if self.disabled or not self.active:
            return self.base_layer(x, *args, **kwargs)
        return self.copies[self.active[0]](x, *args, **kwargs)

    def _mixed(self, routing: Routing, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        routing.check_batch(x.shape[0])
        result = self.base_layer(x, *args, **kwargs)
        for name, idx in routing.indices(x.device).items():
            if name in self.copies:
                result = result.index_copy(0, idx, self.copies[name](x.index_select(0, idx), *args, **kwargs))
        return result

    def unwrap(self, merge: bool) -> nn.Module:
        if merge and self.active:
            return self.copies[self.active[0]]
        return self.base_layer


# --- mixed batches ---------------------------------------------------------------------------


@dataclass
class Routing:
    """Which adapter each sample of a batch uses; index tensors are built once per device."""

    names: tuple[str, ...]
    unique: tuple[str, ...] = ()
    _indices: dict[torch.device, dict[str, Tensor]] = field(default_factory=dict)
    _padded: dict[torch.device, tuple[Tensor, Tensor, Tensor, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[str, None] = {}
        for n in self.names:
            if n != BASE_ADAPTER:
                seen.setdefault(n, None)
        self.unique = tuple(seen)

    def check_batch(self, batch: int) -> None:
        """Refuse a batch whose size differs from the number of names."""
        if batch != len(self.names):
            from ..errors import MixedBatchError

            raise MixedBatchError(
                f"adapter_names has {len(self.names)} entries but the batch has {batch} samples; "
                "give exactly one adapter name per sample ('__base__' for none)"
            )

    def indices(self, device: torch.device) -> dict[str, Tensor]:
        """Sample indices of each adapter (``__base__`` excluded)."""
        got = self._indices.get(device)
        if got is None:
            got = {
                u: torch.tensor([i for i, n in enumerate(self.names) if n == u], dtype=torch.long, device=device)
                for u in self.unique
            }
            self._indices[device] = got
        return got

    def padded(self, device: torch.device) -> tuple[Tensor, Tensor | None, Tensor, int]:
        """Index tables for a grouped batched matmul.

        Returns ``(gather, keep, target, G)``: ``gather`` (U·G) lists each adapter's samples
        padded to G with sample 0; ``keep`` are the positions in it that are real samples (None
        when no group needed padding) and ``target`` the sample each of those belongs to.
        """
        got = self._padded.get(device)
        if got is None:
            groups = [[i for i, n in enumerate(self.names) if n == u] for u in self.unique]
            g = max((len(x) for x in groups), default=0)
            gather: list[int] = []
            keep: list[int] = []
            target: list[int] = []
            for u, members in enumerate(groups):
                gather.extend(members + [0] * (g - len(members)))
                keep.extend(range(u * g, u * g + len(members)))
                target.extend(members)

            def as_tensor(v: list[int]) -> Tensor:
                return torch.tensor(v, dtype=torch.long, device=device)

            padding = len(keep) != len(gather)
            got = (as_tensor(gather), as_tensor(keep) if padding else None, as_tensor(target), g)
            self._padded[device] = got
        return got


ROUTING: ContextVar[Routing | None] = ContextVar("adapter_routing", default=None)


def iter_adapter_modules(model: nn.Module) -> Iterator[tuple[str, AdapterModule]]:
    """Every adapter module of ``model`` with its path (outermost first, none nested)."""
    for path, module in model.named_modules():
        if isinstance(module, AdapterModule):
            yield path, module


def inside_adapter_module(model: nn.Module) -> set[str]:
    """Paths of modules that live inside adapter modules (never targets themselves)."""
    inner: set[str] = set()
    for path, module in iter_adapter_modules(model):
        for sub, _ in module.named_modules():
            if sub:
                inner.add(f"{path}.{sub}" if path else sub)
    return inner


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at ``path`` inside ``model``."""
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, new)
