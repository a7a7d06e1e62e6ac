"""``modules_to_save``: modules an adapter trains in full, as a copy per adapter."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from torch import nn

from ..errors import TargetModulesNotFoundError
from ..targeting import matches_name_list
from .base import AdapterModule, ModulesToSave, inside_adapter_module, replace_module


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
