"""``modules_to_save``: modules an adapter trains in full, as a copy per adapter (any method may have them)."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

from .errors import TargetModulesNotFoundError
from .layers import AdapterModule, inside_adapter_module, replace_module
from .routing import Routing
from .targeting import matches_name_list


class ModulesToSave(AdapterModule):
    """Full trainable copies of a module, one per adapter (PEFT's ``modules_to_save``).

    Saved under the module's own name: the copy's ``weight`` is written as ``<path>.weight``.
    """

    only_one_active: ClassVar[str | None] = (
        "adapters {names} each train their own full copy of this module; only one of them can be active at a time"
    )

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

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        routing = self._route
        if routing is None:
            module = self.base_layer if self.disabled or not self.active else self.copies[self.active[0]]
            return module(x, *args, **kwargs)
        return self._mixed(routing, x, *args, **kwargs)

    def _mixed(self, routing: Routing, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        routing.check_batch(x.shape[0])
        result = self.base_layer(x, *args, **kwargs)
        for name, idx in routing.members.items():
            if name in self.copies:
                idx = idx.to(x.device)
                result = result.index_copy(0, idx, self.copies[name](x.index_select(0, idx), *args, **kwargs))
        return result

    def unwrap(self, merge: bool) -> nn.Module:
        if merge and self.active:
            return self.copies[self.active[0]]
        return self.base_layer


def add_modules_to_save(model: nn.Module, names: Sequence[str], adapter_name: str) -> list[str]:
    """Give adapter ``adapter_name`` a trainable copy of each module matching ``names``."""
    inner = inside_adapter_module(model)
    paths = [p for p, _ in model.named_modules() if p and p not in inner and matches_name_list(p, names)]
    found = {n for n in names if any(matches_name_list(p, [n]) for p in paths)}
    missing = [n for n in names if n not in found]
    if missing:
        leafs = sorted({p.rsplit(".", 1)[-1] for p, _ in model.named_modules() if p})
        hints = {m: difflib.get_close_matches(m, leafs, n=3, cutoff=0.5) for m in missing}
        raise TargetModulesNotFoundError(
            f"modules_to_save {missing} not found in the base model"
            + "".join(f"; for {m!r} did you mean {h}?" for m, h in hints.items() if h)
        )
    for path in paths:
        module = model.get_submodule(path)
        if isinstance(module, ModulesToSave):
            wrapper = module
        elif isinstance(module, AdapterModule):
            raise TargetModulesNotFoundError(f"{path} is already an adapter layer; it cannot also be a module to save")
        else:
            wrapper = ModulesToSave(module)
            replace_module(model, path, wrapper)
        wrapper.add(adapter_name)
    return paths
