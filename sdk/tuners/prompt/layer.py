"""The module that holds a model's prompt adapters and adds their virtual tokens to its calls.

It wraps the model's input embedding (so ``unload()`` gives the plain model back and the
signature code sees the embedding as usual) and registers a forward pre-hook on the model itself:
every call of the model — from ``forward``, ``generate`` or a training loop — is rewritten by
:func:`~.calls.rewrite_call` for the active prompt adapter. ``AdapterModel`` needs no branch for it.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from torch import Tensor, nn

from ...errors import AdapterStateError, MixedBatchError
from ...layers import AdapterModule
from ...routing import Routing
from .calls import rewrite_call
from .config import PromptLearningConfig
from .encoders import VirtualTokenEncoder

SAVED_KEY = "prompt_embeddings"
CACHE_NAMES = ("cache", "past_key_values")


def forward_parameters(model: nn.Module) -> list[str]:
    """Names of ``model.forward``'s parameters that can be given by position or by name."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(model.forward).parameters.values() if p.kind in kinds]


class PromptLearningLayer(AdapterModule):
    """The input embedding of a model, plus one virtual-token encoder per prompt adapter."""

    top_level_keys: ClassVar[bool] = True
    only_one_active: ClassVar[str | None] = (
        "prompt adapters {names} would each put their own virtual tokens in front of the input; only one prompt "
        "adapter can be active at a time"
    )

    def __init__(self, base_layer: nn.Module, host: nn.Module) -> None:
        super().__init__(base_layer)
        self.encoders = nn.ModuleDict()
        self.configs: dict[str, PromptLearningConfig] = {}
        self._params = forward_parameters(host)
        self._positional = [p for p in self._params if p != "self"]
        self.cache_key = next((n for n in CACHE_NAMES if n in self._params), None)
        self._handle = host.register_forward_pre_hook(self._rewrite, with_kwargs=True)

    # --- the embedding itself ------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.base_layer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or name == "base_layer":
                raise
            return getattr(self.base_layer, name)  # weight, num_embeddings, padding_idx, ...

    # --- the AdapterModule protocol ------------------------------------------------------------
    def add(self, name: str, encoder: VirtualTokenEncoder, config: PromptLearningConfig) -> None:
        """Hold adapter ``name``'s encoder (inactive until :meth:`set_active`)."""
        self.encoders[name] = encoder
        self.configs[name] = config

    def adapter_names(self) -> list[str]:
        return list(self.encoders.keys())

    def adapter_tensors(self, name: str) -> dict[str, Tensor]:
        encoder = self.encoders[name]
        if encoder.has_head:  # the head's output is what PEFT saves
            return {SAVED_KEY: encoder.saved_table()}
        return {SAVED_KEY: encoder.embedding.weight}

    def adapter_parameters(self, name: str) -> list[nn.Parameter]:
        return list(self.encoders[name].parameters())

    def prepare_load(self, name: str) -> None:
        self.encoders[name].to_table()

    def delete_adapter(self, name: str) -> None:
        del self.encoders[name]
        self.configs.pop(name, None)
        self.active = tuple(n for n in self.active if n != name)

    def unwrap(self, merge: bool) -> nn.Module:
        self._handle.remove()
        return self.base_layer

    def begin_routing(self, routing: Routing) -> None:
        mine = [n for n in routing.unique if n in self.encoders]
        if mine:
            raise MixedBatchError(
                f"prompt adapters {mine} cannot be mixed per sample (adapter_names=...): their virtual tokens "
                "change the sequence length of the whole batch; run one batch per prompt adapter"
            )
        super().begin_routing(routing)

    # --- the hook on the model ------------------------------------------------------------------
    def _rewrite(self, host: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.disabled or not self.encoders or self._route is not None or not self.active:
            return None
        if len(args) > len(self._positional):
            raise AdapterStateError(f"{type(host).__name__} got {len(args)} positional arguments; pass them by name")
        named = dict(zip(self._positional, args, strict=False))
        duplicate = sorted(set(named) & set(kwargs))
        if duplicate:
            raise AdapterStateError(f"{type(host).__name__} got {duplicate} both by position and by name")
        named.update(kwargs)
        name = self.active[0]
        config = self.configs[name]
        cache_key = self.cache_key or "cache"
        rewritten = rewrite_call(
            named, self.encoders[name], config, self.base_layer, cache_key, getattr(host, "config", None)
        )
        return (), rewritten
