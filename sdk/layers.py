"""The adapter-module contract every method's layers follow, and walking or replacing them in a model
(including the targeting view of a live model, in which an adapter module stands for its layer).

``AdapterModel``, the on-disk format, the signature code and every tuner find adapter state structurally,
by walking modules that derive from :class:`AdapterModule`, never by matching parameter names.
:class:`AdapterLayer` adds what a mergeable layer (one that changes a base weight by ΔW) shares.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor, nn

from .errors import AdapterStateError, MergeError
from .merging import add_delta
from .routing import Routing
from .targeting import ModelView, module_kind

T = TypeVar("T")


_VERSION = operator.attrgetter("_version")  # read once per source tensor per mixed batch: no Python frame each


class VersionedCache(Generic[T]):
    """One value built from some tensors (a layer's stacked adapter weights for a mixed batch), kept while
    it is asked for with the same key and none of those tensors changed in place (version counters)."""

    __slots__ = ("key", "tensors", "value", "versions")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget the value (call it when the layer's adapters change)."""
        self.key: Hashable = None
        self.tensors: tuple[Tensor, ...] = ()
        self.versions: tuple[int, ...] = ()
        self.value: T | None = None

    def get(self, key: Hashable, build: Callable[[], tuple[T, Sequence[Tensor]]]) -> T:
        """The value for ``key``; ``build`` returns a new one and the tensors it was built from."""
        if self.key == key and self.versions == tuple(map(_VERSION, self.tensors)):
            return self.value  # type: ignore[return-value]
        value, tensors = build()
        self.key, self.value, self.tensors = key, value, tuple(tensors)
        self.versions = tuple(map(_VERSION, self.tensors))
        return value


class AdapterModule(nn.Module):
    """A module that holds per-adapter state around a wrapped ``base_layer``."""

    #: Save this module's tensors under their own names (``prompt_embeddings``) rather than under
    #: ``base_model.model.<path>.`` (PEFT's prompt methods save one top-level tensor).
    top_level_keys: ClassVar[bool] = False
    #: Why at most one adapter of this module can be active at a time, with ``{names}`` standing for
    #: the adapters asked for (None: any number can be active together).
    only_one_active: ClassVar[str | None] = None
    #: Keyword arguments of the model's forward that this module reads, one value per sample (Poly's
    #: ``task_ids``): ``AdapterModel`` takes them out of the call and hands them to :meth:`begin_call`.
    call_inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.active: tuple[str, ...] = ()
        self.disabled = False
        self._route: Routing | None = None  # the mixed batch being run, set by AdapterModel

    # --- mixed batches -----------------------------------------------------------------------
    def begin_routing(self, routing: Routing) -> None:
        """Apply each adapter to its own samples (``routing``) in the forwards until :meth:`end_routing`.

        Called by ``AdapterModel`` outside any compiled region, so a layer may prepare tables here
        (stacked weights…) that its forward then reads as plain tensors.
        """
        self.__dict__["_route"] = routing  # a plain attribute: skip nn.Module's checks, on every module per call

    def end_routing(self) -> None:
        """Back to the active adapters."""
        self.__dict__["_route"] = None

    def begin_call(self, inputs: dict[str, Any]) -> None:
        """Take the values of :attr:`call_inputs` for the forwards until :meth:`end_call` (called outside any
        compiled region, so a module may check them here). ``inputs`` is shared by every module of the call."""

    def end_call(self) -> None:
        """Forget the values :meth:`begin_call` took."""

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
        present = [n for n in names if n in self.adapter_names()]
        if self.only_one_active is not None and len(present) > 1:
            raise AdapterStateError(self.only_one_active.format(names=present))
        self.active = tuple(present)

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
        routing = self._route
        if routing is not None:
            routing.check_batch(x.shape[0])
            names = self.adapter_names()
            for name, idx in routing.members.items():
                if name in names:
                    idx = idx.to(x.device)
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


def model_view(model: nn.Module) -> ModelView:
    """The targeting view of a live model. An adapter module counts as the layer it wraps, so a config
    selects the same modules before and after adapters are added."""
    kinds: dict[str, str] = {}
    skip: list[str] = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(s) for s in skip):
            continue
        if isinstance(module, AdapterModule):
            kinds[path] = module_kind(module.base_layer)
            skip.append(path + ".")
        else:
            kinds[path] = module_kind(module)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return ModelView(kinds, model_type, frozenset(_output_heads(model)))


def _output_heads(model: nn.Module) -> set[str]:
    getter = getattr(model, "get_output_embeddings", None)
    try:
        head = getter() if callable(getter) else None
    except (AttributeError, NotImplementedError):
        head = None
    if head is None:
        return {n for n, _ in model.named_modules() if n == "lm_head" or n.endswith(".lm_head")}
    found = {n for n, m in model.named_modules() if m is head}
    if not found:  # the head may be wrapped by an adapter module
        found = {n for n, m in model.named_modules() if getattr(m, "base_layer", None) is head}
    return found


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at ``path`` inside ``model``."""
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, new)
