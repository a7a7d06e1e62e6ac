"""Injecting AdaLoRA adapters, their on-disk shapes, the per-step rank allocation hook and the
orthogonal regulariser. Targeting, ``modules_to_save`` and trained biases work as in LoRA."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from ...errors import TargetingError, UnsupportedLayerError
from ...layers import AdapterModule, iter_adapter_modules, replace_module
from ...modules_to_save import add_modules_to_save
from ...quantization import quantized_kind
from ...targeting import ModelView
from ..lora.tuner import LoraTuner
from . import allocator
from .config import AdaLoraConfig
from .layers import LAYER_BY_KIND, AdaLoraConv1D, AdaLoraLayer, width_for

if TYPE_CHECKING:
    from ...signature import ExpectedTensor, Signature

SUPPORTED = "nn.Linear, transformers' Conv1D, nn.Conv2d, bitsandbytes Linear4bit/Linear8bitLt"

#: PEFT's default AdaLoRA targets where they differ from LoRA's (other architectures share LoRA's).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "t5": ["q", "k", "v", "o", "wi", "wo"],
    "mt5": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
    "bart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "roberta": ["query", "key", "value", "dense"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
}


def _unsupported(kind: str) -> str:
    return f"layers of type {kind} are not supported by AdaLoRA (supported: {SUPPORTED})"


def _layer_factory(module: nn.Module, kind: str) -> type[AdaLoraLayer] | str:
    """The AdaLoRA layer class for ``module``, or the reason it cannot be adapted."""
    if quantized_kind(module) is not None:  # bitsandbytes Linear4bit / Linear8bitLt
        from .bnb import AdaLoraBnbLinear

        return AdaLoraBnbLinear
    cls = LAYER_BY_KIND.get(kind)
    if cls is None:
        return _unsupported(kind)
    if kind == "Conv2d" and module.groups != 1:
        return "Conv2d with groups is not supported by AdaLoRA"
    return cls


class AdaLoraTuner(LoraTuner):
    """The AdaLoRA method's :class:`~sdk.methods.Tuner`, with the optional training hooks."""

    def select(self, view: ModelView, config: AdaLoraConfig) -> list[str]:  # type: ignore[override]
        if config.target_modules is None and view.model_type in DEFAULT_TARGETS:
            config = config.copy(target_modules=list(DEFAULT_TARGETS[view.model_type]))
        return super().select(view, config)

    def inject(self, model: nn.Module, config: AdaLoraConfig, adapter_name: str) -> list[str]:  # type: ignore[override]
        """Add adapter ``adapter_name`` to every targeted module; nothing changes if any check fails.

        With a ``rank_pattern`` (a trained adapter being loaded) each module gets only its kept
        triplets, and the divisor stays ``init_r``, as in PEFT.
        """
        view = ModelView.of(model)
        keys = self.select(view, config)
        plan: list[tuple[str, nn.Module, type[AdaLoraLayer] | None]] = []
        problems: list[str] = []
        for path in keys:
            module = model.get_submodule(path)
            if isinstance(module, AdaLoraLayer):
                plan.append((path, module, None))
            elif isinstance(module, AdapterModule):
                problems.append(f"{path}: already wrapped by {type(module).__name__}; cannot add AdaLoRA to it")
            else:
                made = _layer_factory(module, view.kinds[path])
                if isinstance(made, str):
                    problems.append(f"{path}: {made}")
                else:
                    plan.append((path, module, made))
        if problems:
            cls = UnsupportedLayerError if all("not supported" in p for p in problems) else TargetingError
            raise cls("cannot add AdaLoRA adapter:\n  " + "\n  ".join(problems))
        conv1d = any(f is AdaLoraConv1D or isinstance(m, AdaLoraConv1D) for _, m, f in plan)
        if conv1d != config.fan_in_fan_out and any(view.kinds[p] in ("Linear", "Conv1D") for p, _, _ in plan):
            warnings.warn(
                f"setting fan_in_fan_out={conv1d}: the targeted layers are {'Conv1D' if conv1d else 'nn.Linear'}",
                UserWarning,
                stacklevel=3,
            )
            config.fan_in_fan_out = conv1d
        for path, module, factory in plan:
            layer = module if factory is None else factory(module)
            assert isinstance(layer, AdaLoraLayer)
            mask = config.mask_for(path, adapter_name)
            r = sum(mask) if mask is not None else config.init_r
            layer.add(adapter_name, r, config.init_r, config.scaling_for(path, r), config.lora_dropout,
                      config.init_lora_weights)
            if factory is not None:
                replace_module(model, path, layer)
        mts = self.modules_to_save(view, config)
        if mts:
            add_modules_to_save(model, mts, adapter_name)
        return keys

    def expected_shapes(self, config: AdaLoraConfig, signature: Signature) -> dict[str, ExpectedTensor]:  # type: ignore[override]
        """On-disk keys (without ``base_model.model.``) and shapes: ranks cut to ``rank_pattern``'s kept triplets."""
        from ...signature import ExpectedTensor

        view = signature.view()
        modules = signature.by_path()
        out: dict[str, ExpectedTensor] = {}
        problems: list[str] = []
        keys = self.select(view, config)
        for path in keys:
            entry = modules.get(path)
            kind = entry.kind if entry is not None else view.kinds[path]
            if entry is None or kind not in LAYER_BY_KIND or entry.in_features is None or entry.out_features is None:
                problems.append(f"{path}: {_unsupported(kind)}")
                continue
            r = config.rank_for(path)
            width = width_for(kind, entry.in_features, entry.kernel_size)
            in_dim = "in_features·kernel_h·kernel_w" if kind == "Conv2d" else "in_features"
            out[f"{path}.lora_A"] = ExpectedTensor((r, width), ("r", in_dim))
            out[f"{path}.lora_B"] = ExpectedTensor((entry.out_features, r), ("out_features", "r"))
            out[f"{path}.lora_E"] = ExpectedTensor((r, 1), ("r", "1"))
            if config.bias == "lora_only" and "bias" in entry.params:
                out[f"{path}.base_layer.bias"] = ExpectedTensor(entry.params["bias"], ("out_features",))
        if problems:
            raise TargetingError("the AdaLoRA config does not fit the base model:\n  " + "\n  ".join(problems))
        self._expect_outside_layers(out, view, config, signature, keys, modules)
        return out

    def extra_state(self, model: nn.Module, config: AdaLoraConfig, adapter_name: str) -> dict[str, Tensor]:  # type: ignore[override]
        """Biases the adapter trains (``bias="all"`` or ``"lora_only"``), keyed by model path."""
        if config.bias == "none":
            return {}
        if config.bias == "lora_only":
            return {
                f"{path}.base_layer.bias": bias
                for path, layer in _layers(model, adapter_name)
                if isinstance(bias := getattr(layer.base_layer, "bias", None), nn.Parameter)
            }
        skip = {path for path, mod in iter_adapter_modules(model) if not isinstance(mod, AdaLoraLayer)}
        return {
            name: param
            for name, param in model.named_parameters()
            if (name == "bias" or name.endswith(".bias")) and not any(name.startswith(s + ".") for s in skip)
        }

    def summary_fields(self, config: AdaLoraConfig) -> dict[str, Any]:  # type: ignore[override]
        """The starting rank ``init_r`` (``rank_pattern`` has the kept ones), alpha and ``rank_pattern``."""
        fields = super().summary_fields(config)
        return {**fields, "r": config.to_dict().get("init_r") or fields["r"]}

    def zero_at_init(self, key: str) -> bool:
        """Λ (``lora_E``) starts at zero, so an adapter whose every ``lora_E`` is zero changes nothing."""
        return key.endswith(".lora_E")

    # --- optional training hooks (see sdk.methods.Tuner) --------------------------------------
    def on_step_end(self, model: nn.Module, config: AdaLoraConfig, adapter_name: str, global_step: int) -> None:
        """One step of rank allocation; reads gradients, so run it before ``optimizer.zero_grad()``.

        Does nothing for frozen adapters, and for adapters loaded with their ranks already cut
        (``rank_pattern`` at load time): their allocation is finished.
        """
        layers = _layers(model, adapter_name)
        if config.inference_mode or not layers or not all(layer.full_rank(adapter_name) for _, layer in layers):
            return
        allocator.step(layers, config, adapter_name, int(global_step))

    def extra_loss(self, model: nn.Module, config: AdaLoraConfig, adapter_name: str) -> Tensor | None:
        """``orth_reg_weight`` × the orthogonal regulariser of a trainable adapter (None when frozen or 0)."""
        if config.inference_mode or config.orth_reg_weight == 0:
            return None
        penalty = allocator.orthogonal_penalty(_layers(model, adapter_name), adapter_name)
        return None if penalty is None else config.orth_reg_weight * penalty


def _layers(model: nn.Module, adapter_name: str) -> list[tuple[str, AdaLoraLayer]]:
    return [
        (path, module)
        for path, module in iter_adapter_modules(model)
        if isinstance(module, AdaLoraLayer) and adapter_name in module.lora_A
    ]
