"""Injecting (IA)³ adapters and the tensor shapes an IA3 adapter has on a base-model signature."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import ConfigError
from ...signature import ExpectedTensor
from ...targeting import ModelView
from ..layer_tuner import LayerTuner
from .config import DEFAULT_FEEDFORWARD, DEFAULT_TARGETS, IA3Config
from .layers import IA3Layer

if TYPE_CHECKING:
    from torch import nn

    from ...signature import ModuleEntry

SUPPORTED = ("Linear", "Conv1D", "Conv2d")


class IA3Tuner(LayerTuner):
    """The IA3 method's :class:`~sdk.methods.Tuner`."""

    method = "IA3"
    factor_prefixes = ("ia3_",)
    layer_cls = IA3Layer
    default_targets = DEFAULT_TARGETS

    def unsupported(self, entry: ModuleEntry) -> str | None:
        if entry.kind not in SUPPORTED or entry.in_features is None or entry.out_features is None:
            return f"layers of type {entry.kind} are not supported by IA3 (supported: nn.Linear, Conv1D, nn.Conv2d)"
        weight = entry.params.get("weight")
        if entry.kind == "Conv2d" and weight is not None and weight[1] != entry.in_features:
            return "grouped Conv2d layers are not supported by IA3"
        return None

    def tensor_shapes(
        self, config: IA3Config, path: str, entry: ModuleEntry, view: ModelView
    ) -> dict[str, ExpectedTensor]:
        ff = config.is_feedforward(path, view.model_type)
        shape = IA3Layer.vector_shape(entry.kind, ff, entry.in_features or 0, entry.out_features or 0)
        side = "in_features" if ff else "out_features"
        if entry.kind == "Conv2d":
            dims = ("1", side, "1", "1")
        else:
            dims = ("1", side) if ff else (side, "1")
        return {"ia3_l": ExpectedTensor(shape, dims)}

    def add_to_layer(self, layer: IA3Layer, adapter_name: str, config: IA3Config, path: str, view: ModelView) -> None:
        layer.add(adapter_name, config.is_feedforward(path, view.model_type), config.init_ia3_weights)

    def zero_at_init(self, key: str) -> bool:
        """IA3 vectors start as ones, never zeros: no all-zero probe applies."""
        return False

    def select(self, view: ModelView, config: IA3Config) -> list[str]:
        if config.feedforward_modules is None and view.model_type not in DEFAULT_FEEDFORWARD:
            raise ConfigError(
                f"feedforward_modules is not set and IA3 has no default for model_type={view.model_type!r}; "
                "pass feedforward_modules=[...] (the targets whose input is scaled, or [] for none)"
            )
        return super().select(view, config)

    def inject(self, model: nn.Module, config: IA3Config, adapter_name: str) -> list[str]:
        """Inject, recording the defaults PEFT writes into the config (targets, feed-forward modules)."""
        keys = super().inject(model, config, adapter_name)
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if config.target_modules is None:
            config.target_modules = list(DEFAULT_TARGETS[model_type])
        if config.feedforward_modules is None:
            config.feedforward_modules = list(DEFAULT_FEEDFORWARD[model_type])
        if any(layer.kind == "Conv1D" for layer in (model.get_submodule(k) for k in keys)):
            config.fan_in_fan_out = True  # Conv1D stores weights in×out; PEFT records it like this
        return keys
