"""Injecting LoRA adapters into a model, and the parts of its state LoRA owns outside its layers."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ...errors import TargetingError, TargetModulesNotFoundError, UnsupportedLayerError
from ...targeting import (
    SEQ_CLS_HEADS,
    is_target,
    linear_classes,
    not_found_message,
    resolve_target_modules,
)
from ..base import AdapterModule, inside_adapter_module, iter_adapter_modules, replace_module
from ..modules_to_save import add_modules_to_save
from .config import LoraConfig
from .layers import LoraConv1D, LoraConv2d, LoraEmbedding, LoraLayer, LoraLinear

SUPPORTED = "nn.Linear, transformers' Conv1D, nn.Embedding, nn.Conv2d"


def _layer_factory(module: nn.Module) -> Callable[[nn.Module], LoraLayer] | str:
    """The LoRA layer class for ``module``, or the reason it cannot be adapted."""
    lin = linear_classes()
    if isinstance(module, nn.Linear):
        return LoraLinear
    if len(lin) > 1 and isinstance(module, lin[1]):
        return LoraConv1D
    if isinstance(module, nn.Embedding):
        return LoraEmbedding
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.dilation != (1, 1):
            return "Conv2d with groups or dilation is not supported"
        if isinstance(module.padding, str):
            return "Conv2d with string padding is not supported"
        return LoraConv2d
    return f"layers of type {type(module).__name__} are not supported (supported: {SUPPORTED})"


class LoraTuner:
    """The LoRA method's :class:`~sdk.methods.Tuner`."""

    def select(self, model: nn.Module, config: LoraConfig) -> list[str]:
        """Paths of the modules ``config`` targets in ``model`` (errors if none)."""
        targets = resolve_target_modules(model, config.target_modules, task_type=config.task_type)
        inner = inside_adapter_module(model)
        keys = [
            path
            for path, _ in model.named_modules()
            if path and path not in inner
            and is_target(
                path,
                targets,
                exclude_modules=config.exclude_modules,
                layers_to_transform=config.layers_to_transform,
                layers_pattern=config.layers_pattern,
                modules_to_save=self.modules_to_save(model, config),
            )
        ]
        if not keys:
            extra = ""
            if config.layers_to_transform is not None:
                extra = f" within layers {config.layers_to_transform}"
            if config.exclude_modules:
                extra += f" after excluding {config.exclude_modules}"
            raise TargetModulesNotFoundError(not_found_message(model, targets, extra))
        return keys

    def modules_to_save(self, model: nn.Module, config: LoraConfig) -> list[str]:
        """``modules_to_save`` plus the classification head that the task trains in full."""
        names = list(config.modules_to_save or [])
        if config.task_type in ("SEQ_CLS", "TOKEN_CLS"):
            present = {p.rsplit(".", 1)[-1] for p, _ in model.named_modules()}
            names += [h for h in SEQ_CLS_HEADS if h in present and h not in names]
        return names

    def inject(self, model: nn.Module, config: LoraConfig, adapter_name: str) -> list[str]:
        """Add adapter ``adapter_name`` to every targeted module; nothing changes if any check fails."""
        keys = self.select(model, config)
        plan: list[tuple[str, nn.Module, Callable[[nn.Module], LoraLayer] | None, int]] = []
        problems: list[str] = []
        for path in keys:
            module = model.get_submodule(path)
            r = config.rank_for(path)
            if isinstance(module, LoraLayer):
                factory = None
                probe: LoraLayer = module
            elif isinstance(module, AdapterModule):
                problems.append(f"{path}: already wrapped by {type(module).__name__}; cannot add LoRA to it")
                continue
            else:
                made = _layer_factory(module)
                if isinstance(made, str):
                    problems.append(f"{path}: {made}")
                    continue
                factory, probe = made, made(module)
            if r > probe.max_rank():
                problems.append(
                    f"{path}: r={r} is larger than min(in, out)={probe.max_rank()} of this "
                    f"{type(probe.base_layer).__name__}; lower `r` (or set rank_pattern for it)"
                )
                continue
            plan.append((path, module, factory, r))
        if problems:
            cls = UnsupportedLayerError if all("not supported" in p for p in problems) else TargetingError
            raise cls("cannot add LoRA adapter:\n  " + "\n  ".join(problems))
        if any(factory is LoraConv1D for _, _, factory, _ in plan) and not config.fan_in_fan_out:
            config.fan_in_fan_out = True  # Conv1D stores weights in×out; PEFT records it like this
        mts = self.modules_to_save(model, config)
        for path, module, factory, r in plan:
            layer = module if factory is None else factory(module)
            layer.add(
                adapter_name,
                r,
                config.scaling_for(path, r),
                config.lora_dropout,
                config.init_lora_weights,
            )
            if factory is not None:
                replace_module(model, path, layer)
        if mts:
            add_modules_to_save(model, mts, adapter_name)
        return keys

    def extra_state(self, model: nn.Module, config: LoraConfig, adapter_name: str) -> dict[str, Tensor]:
        """Biases the adapter trains (``bias="all"`` or ``"lora_only"``), keyed by model path."""
        if config.bias == "none":
            return {}
        owned: dict[str, Tensor] = {}
        if config.bias == "lora_only":
            for path, mod in iter_adapter_modules(model):
                if isinstance(mod, LoraLayer) and adapter_name in mod.adapter_names():
                    bias = getattr(mod.base_layer, "bias", None)
                    if isinstance(bias, nn.Parameter):
                        owned[f"{path}.base_layer.bias"] = bias
            return owned
        skip = {path for path, mod in iter_adapter_modules(model) if not isinstance(mod, LoraLayer)}
        for name, param in model.named_parameters():
            if (name == "bias" or name.endswith(".bias")) and not any(name.startswith(s + ".") for s in skip):
                owned[name] = param
        return owned

    def mark_trainable(self, model: nn.Module, config: LoraConfig, adapter_name: str) -> None:
        """Unfreeze the biases the adapter trains."""
        for param in self.extra_state(model, config, adapter_name).values():
            if isinstance(param, nn.Parameter):
                param.requires_grad_(True)
