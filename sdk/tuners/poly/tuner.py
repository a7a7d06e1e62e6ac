"""Injecting Poly adapters, and the tensor shapes a Poly adapter has on a base-model signature."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...signature import ExpectedTensor
from ...targeting import DEFAULT_TARGETS, ModelView
from ..layer_tuner import LayerTuner
from .config import PolyConfig
from .layers import PolyLayer

if TYPE_CHECKING:
    from ...signature import ModuleEntry


class PolyTuner(LayerTuner):
    """The Poly method's :class:`~sdk.methods.Tuner` (PEFT adapts ``nn.Linear`` layers only, and so do we)."""

    method = "Poly"
    factor_prefixes = ("poly_",)
    layer_cls = PolyLayer
    default_targets = DEFAULT_TARGETS  # PEFT's Poly defaults are LoRA's

    def unsupported(self, entry: ModuleEntry) -> str | None:
        if entry.kind != "Linear" or entry.in_features is None or entry.out_features is None:
            return f"layers of type {entry.kind} are not supported by Poly (supported: nn.Linear, as in PEFT)"
        return None

    def tensor_shapes(
        self, config: PolyConfig, path: str, entry: ModuleEntry, view: ModelView
    ) -> dict[str, ExpectedTensor]:
        in_f, out_f = entry.in_features or 0, entry.out_features or 0
        q, s, r = config.n_splits, config.n_skills, config.r
        if in_f % q or out_f % q:
            raise ValueError(f"n_splits={q} must divide in_features={in_f} and out_features={out_f}")
        split_in, split_out = "in_features/n_splits", "out_features/n_splits"
        return {
            "poly_lora_A": ExpectedTensor((q, s, in_f // q, r), ("n_splits", "n_skills", split_in, "r")),
            "poly_lora_B": ExpectedTensor((q, s, r, out_f // q), ("n_splits", "n_skills", "r", split_out)),
            "poly_router.module_logits": ExpectedTensor((config.n_tasks, q * s), ("n_tasks", "n_splits*n_skills")),
        }

    def add_to_layer(self, layer: PolyLayer, adapter_name: str, config: PolyConfig, path: str, view: ModelView
                     ) -> None:
        layer.add(adapter_name, config)

    def zero_at_init(self, key: str) -> bool:
        return key.endswith(".poly_lora_B")

    def merge_refusal(self, config: PolyConfig) -> str | None:
        """Poly mixes its skills per sample by task id: there is no single ΔW."""
        return "a Poly adapter mixes its skills per sample by task id, so there is no single ΔW to merge"

    def summary_fields(self, config: Any) -> dict[str, Any]:
        return {"r": config.r}
