"""What the merge code reads: one adapter's LoRA settings as plain values, how to combine, and who can be.

:class:`LoraSettings` is made from an adapter config in one place (:meth:`LoraSettings.from_config`),
so :mod:`sdk.merging` depends on no method's config class. :class:`CombineOptions` holds the
settings of PEFT's ``add_weighted_adapter`` as one object. :func:`combinable` is the one rule for
"can this adapter be combined, and why not", used by the SDK and by the registry's merge-job checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import torch

from ..config import AdapterConfig
from ..problems import Problem
from ..targeting import pattern_key
from .deltas import lora_scaling
from .task_arithmetic import MajoritySignMethod

CombinationType = Literal[
    "svd", "linear", "cat", "ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd", "dare_linear_svd",
    "magnitude_prune", "magnitude_prune_svd",
]
COMBINATION_TYPES: tuple[str, ...] = get_args(CombinationType)
#: Types applied to the A and B factors separately (they need one common rank).
FACTOR_TYPES = frozenset({"linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"})
#: Types that take ``density``.
DENSITY_TYPES = frozenset({
    "ties", "ties_svd", "dare_linear", "dare_linear_svd", "dare_ties", "dare_ties_svd", "magnitude_prune",
    "magnitude_prune_svd",
})
#: The only method whose adapters can be combined (``peft_type``).
COMBINABLE = "LORA"


@dataclass(frozen=True)
class LoraSettings:
    """The values of a LoRA config that combining and merging read: ranks, scales and targets."""

    r: int
    lora_alpha: float
    use_rslora: bool = False
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)
    #: The base weights are stored in×out (transformers' Conv1D).
    fan_in_fan_out: bool = False
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    modules_to_save: list[str] | None = None

    @classmethod
    def from_config(cls, config: AdapterConfig) -> LoraSettings:
        """The settings of a LoRA ``config`` (whose ``peft_type`` the caller has checked)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @property
    def max_rank(self) -> int:
        """The largest rank the config can give a module (as PEFT reads it)."""
        return max(self.r, *self.rank_pattern.values()) if self.rank_pattern else self.r

    def scaling_for(self, path: str, r: int) -> float:
        """Output scale of the module at ``path`` whose factors have rank ``r`` (``alpha_pattern`` first)."""
        key = pattern_key(self.alpha_pattern, path)
        return lora_scaling(r, self.alpha_pattern[key] if key is not None else self.lora_alpha, self.use_rslora)


@dataclass(frozen=True)
class CombineOptions:
    """How to combine adapters: the settings of PEFT's ``add_weighted_adapter`` as one object.

    ``weights[i]`` is adapter ``i``'s weight (it may be negative). ``density`` in (0, 1] is the
    share of values the pruning types keep; ``majority_sign_method`` is used by the ``ties``
    types and ``svd_*`` by the SVD types (``svd_clamp`` is a quantile in [0, 1]). ``generator``
    draws the ``dare_*`` masks (``None``: the global RNG). ``module_order`` lists module paths in
    the order the masks are drawn (PEFT uses the model's module order); unlisted modules follow in
    the order they first appear in the inputs. Checked when a combination is planned.
    """

    weights: Sequence[float]
    combination_type: CombinationType = "svd"
    svd_rank: int | None = None
    svd_clamp: float | None = None
    svd_full_matrices: bool = True
    svd_driver: str | None = None
    density: float | None = None
    majority_sign_method: MajoritySignMethod = "total"
    generator: torch.Generator | None = None
    module_order: Sequence[str] | None = None


def combinable(config: AdapterConfig | Mapping[str, Any], where: str = "the adapter") -> list[Problem]:
    """Why the adapter with ``config`` (a config or its JSON dict) cannot be combined; empty when it can.

    Only plain LoRA adapters can: DoRA's magnitude vector and trained biases do not survive
    weighting. Each message starts with ``where`` (e.g. ``"adapter 0"``).
    """
    if isinstance(config, AdapterConfig):
        values, method = config.to_dict(), config.peft_type or type(config).__name__
    else:
        values, method = config, str(config.get("peft_type"))
    if method != COMBINABLE:
        return [Problem(None, COMBINABLE, method,
                        f"{where} is a {method} adapter; only LoRA adapters can be combined")]
    problems: list[Problem] = []
    if values.get("use_dora"):
        problems.append(Problem(None, "use_dora: false", f"use_dora: {values['use_dora']}",
                                f"{where} is a DoRA adapter (use_dora=True): its magnitude vector rescales whole "
                                "weight rows, so DoRA adapters cannot be combined as low-rank factors"))
    if values.get("lora_bias"):
        problems.append(Problem(None, "lora_bias: false", f"lora_bias: {values['lora_bias']}",
                                f"{where} uses lora_bias (a trained bias beside B); such LoRA adapters cannot be "
                                "combined"))
    bias = values.get("bias") or "none"
    if bias != "none":
        problems.append(Problem(None, "bias: none", f"bias: {bias}",
                                f"{where} trains biases (bias={bias!r}); trained biases replace base biases and "
                                "cannot be weighted, so such adapters cannot be combined"))
    return problems


__all__ = [
    "COMBINABLE",
    "COMBINATION_TYPES",
    "DENSITY_TYPES",
    "FACTOR_TYPES",
    "CombinationType",
    "CombineOptions",
    "LoraSettings",
    "combinable",
]
