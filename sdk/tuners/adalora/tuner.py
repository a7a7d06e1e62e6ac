"""The AdaLoRA method's tuner: which layer class wraps a module, the on-disk shapes (ranks cut to the
kept triplets), the per-step rank allocation hook and the orthogonal regulariser. Targeting,
``modules_to_save`` and trained biases work as in LoRA."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from ...layers import AdapterModule, iter_adapter_modules
from ...quantization import quantized_kind
from ...signature import ExpectedTensor
from ...targeting import ModelView
from ..layer_tuner import Plan
from ..lora.tuner import LoraFamilyTuner, owned_bias
from . import allocator
from .config import AdaLoraConfig
from .layers import LAYER_BY_KIND, AdaLoraConv1D, AdaLoraLayer, width_for

if TYPE_CHECKING:
    from ...signature import ModuleEntry

#: PEFT's default AdaLoRA targets where they differ from LoRA's (other architectures share LoRA's).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "t5": ["q", "k", "v", "o", "wi", "wo"],
    "mt5": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
    "bart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "roberta": ["query", "key", "value", "dense"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
}


class AdaLoraTuner(LoraFamilyTuner):
    """The AdaLoRA method's :class:`~sdk.methods.Tuner`, with the optional training hooks."""

    method = "AdaLoRA"
    config_label = "AdaLoRA"
    layer_cls: ClassVar[type[AdapterModule]] = AdaLoraLayer
    layer_by_kind = LAYER_BY_KIND
    kind_unsupported_text = (
        "layers of type {kind} are not supported by AdaLoRA (supported: nn.Linear, transformers' Conv1D, nn.Conv2d, "
        "bitsandbytes Linear4bit/Linear8bitLt)"
    )

    def targets(self, view: ModelView, config: AdaLoraConfig) -> str | list[str]:
        if config.target_modules is None and view.model_type in DEFAULT_TARGETS:
            config = config.copy(target_modules=list(DEFAULT_TARGETS[view.model_type]))
        return super().targets(view, config)

    def layer_for(self, module: nn.Module, path: str, config: AdaLoraConfig, view: ModelView
                  ) -> type[AdaLoraLayer] | str:
        """The AdaLoRA layer class for ``module``, or the reason it cannot be adapted."""
        if quantized_kind(module) is not None:  # bitsandbytes Linear4bit / Linear8bitLt
            from .bnb import AdaLoraBnbLinear

            return AdaLoraBnbLinear
        kind = view.kinds[path]
        cls = LAYER_BY_KIND.get(kind)
        if cls is None:
            return self.kind_unsupported(kind)
        if kind == "Conv2d" and module.groups != 1:
            return "Conv2d with groups is not supported by AdaLoRA"
        return cls

    def prepare(self, plan: Plan, config: AdaLoraConfig, view: ModelView) -> None:
        """Set ``fan_in_fan_out`` to what the targeted layers store (Conv1D: in×out), with a warning if it changes."""
        conv1d = any(f is AdaLoraConv1D or isinstance(m, AdaLoraConv1D) for _, m, f in plan)
        if conv1d != config.fan_in_fan_out and any(view.kinds[p] in ("Linear", "Conv1D") for p, _, _ in plan):
            warnings.warn(
                f"setting fan_in_fan_out={conv1d}: the targeted layers are {'Conv1D' if conv1d else 'nn.Linear'}",
                UserWarning,
                stacklevel=4,  # the caller of AdapterModel.add_adapter
            )
            config.fan_in_fan_out = conv1d

    def add_to_layer(self, layer: AdaLoraLayer, adapter_name: str, config: AdaLoraConfig, path: str,
                     view: ModelView) -> None:
        """With a ``rank_pattern`` (a trained adapter being loaded) the layer gets only its kept triplets,
        and the divisor stays ``init_r``, as in PEFT."""
        mask = config.mask_for(path, adapter_name)
        r = sum(mask) if mask is not None else config.init_r
        layer.add(adapter_name, r, config.init_r, config.scaling_for(path, r), config.lora_dropout,
                  config.init_lora_weights)

    def tensor_shapes(
        self, config: AdaLoraConfig, path: str, entry: ModuleEntry, view: ModelView
    ) -> dict[str, ExpectedTensor]:
        """P, Λ and Q with ranks cut to ``rank_pattern``'s kept triplets, and the biases saved with them."""
        assert entry.in_features is not None and entry.out_features is not None
        r = config.rank_for(path)
        width = width_for(entry.kind, entry.in_features, entry.kernel_size)
        in_dim = "in_features·kernel_h·kernel_w" if entry.kind == "Conv2d" else "in_features"
        return {
            "lora_A": ExpectedTensor((r, width), ("r", in_dim)),
            "lora_B": ExpectedTensor((entry.out_features, r), ("out_features", "r")),
            "lora_E": ExpectedTensor((r, 1), ("r", "1")),
        } | owned_bias(config, entry)

    def summary_fields(self, config: AdaLoraConfig) -> dict[str, Any]:
        """The starting rank ``init_r`` (``rank_pattern`` has the kept ones), alpha and ``rank_pattern``."""
        fields = super().summary_fields(config)
        return {**fields, "r": config.to_dict().get("init_r") or fields["r"]}

    def zero_at_init(self, key: str) -> bool:
        """Λ (``lora_E``) starts at zero, so an adapter whose every ``lora_E`` is zero changes nothing."""
        return key.endswith(".lora_E")

    # --- optional training hooks (see sdk.methods.TrainingHooks) ------------------------------
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
