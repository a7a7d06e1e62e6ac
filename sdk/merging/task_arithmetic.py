"""Task-arithmetic primitives: combining same-shaped "task tensors" (one per adapter), one weight each.

They follow the definitions used by PEFT's merge utilities step for step (including the order in
which random masks are drawn), so results agree with PEFT's on the same inputs and seed. Used by
:mod:`sdk.merging.combine` on LoRA factors and on full ΔW matrices.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import MergeError

MajoritySignMethod = Literal["total", "frequency"]


def check_density(density: float | None, method: str) -> float:
    """``density`` as a float in (0, 1]; a clear error when it is missing or out of range."""
    if density is None:
        raise MergeError(f"combination_type {method!r} needs `density` (the fraction of values kept, in (0, 1])")
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 < float(density) <= 1.0:
        raise MergeError(f"`density` must be a number in (0, 1], got {density!r}")
    return float(density)


def _stack_weighted(tensors: list[Tensor], weights: Tensor) -> Tensor:
    stacked = torch.stack(tensors, dim=0)
    return stacked * weights.view(weights.shape + (1,) * (stacked.dim() - 1))


def task_arithmetic(tensors: list[Tensor], weights: Tensor) -> Tensor:
    """``Σ_i weights[i]·tensors[i]``."""
    return _stack_weighted(tensors, weights).sum(dim=0)


def magnitude_mask_prune(tensor: Tensor, density: float) -> Tensor:
    """Keep the ``int(density·numel)`` largest-magnitude values of ``tensor``, zero the rest."""
    if density >= 1.0:
        return tensor
    keep = torch.topk(tensor.abs().reshape(-1), k=int(density * tensor.numel()), largest=True).indices
    mask = torch.zeros_like(tensor).reshape(-1)
    mask[keep] = 1
    return tensor * mask.reshape(tensor.shape)


def random_mask_prune(tensor: Tensor, density: float, generator: torch.Generator | None = None) -> Tensor:
    """DARE's drop step: keep each value with probability ``density`` and divide the kept ones by it.

    The mask is one ``torch.bernoulli`` draw over the whole tensor from ``generator`` (the global
    RNG when ``None``), so a fixed seed gives a fixed mask.
    """
    if density >= 1.0:
        return tensor
    mask = torch.bernoulli(torch.full_like(tensor, density), generator=generator)
    return tensor * mask / density


def majority_sign_mask(stacked: Tensor, method: MajoritySignMethod = "total") -> Tensor:
    """TIES' sign election over dim 0: True where a value has the elected sign of its position.

    ``"total"`` elects the sign of the sum of the values, ``"frequency"`` the sign most values
    have; ties go to ``+``.
    """
    sign = stacked.sign()
    if method == "total":
        score = stacked.sum(dim=0)
    elif method == "frequency":
        score = sign.sum(dim=0)
    else:
        raise MergeError(f"majority_sign_method must be 'total' or 'frequency', got {method!r}")
    return sign == torch.where(score >= 0, 1, -1)


def disjoint_mean(weighted: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 0 of the values that agree with the elected sign (0 where none do)."""
    return (weighted * mask).sum(dim=0) / torch.clamp(mask.sum(dim=0), min=1.0)


def ties(tensors: list[Tensor], weights: Tensor, density: float, method: MajoritySignMethod = "total") -> Tensor:
    """TIES-merging: magnitude-prune each tensor, elect signs, average the agreeing weighted values."""
    pruned = torch.stack([magnitude_mask_prune(t, density) for t in tensors], dim=0)
    mask = majority_sign_mask(pruned, method)
    return disjoint_mean(pruned * weights.view(weights.shape + (1,) * (pruned.dim() - 1)), mask)


def dare_linear(
    tensors: list[Tensor], weights: Tensor, density: float, generator: torch.Generator | None = None
) -> Tensor:
    """DARE then task arithmetic: random drop with rescale, weighted sum."""
    return task_arithmetic([random_mask_prune(t, density, generator) for t in tensors], weights)


def dare_ties(
    tensors: list[Tensor],
    weights: Tensor,
    density: float,
    method: MajoritySignMethod = "total",
    generator: torch.Generator | None = None,
) -> Tensor:
    """DARE then TIES' sign election and disjoint mean."""
    pruned = torch.stack([random_mask_prune(t, density, generator) for t in tensors], dim=0)
    mask = majority_sign_mask(pruned, method)
    return disjoint_mean(pruned * weights.view(weights.shape + (1,) * (pruned.dim() - 1)), mask)


def magnitude_prune(tensors: list[Tensor], weights: Tensor, density: float) -> Tensor:
    """Magnitude-prune each tensor, then weighted sum."""
    return task_arithmetic([magnitude_mask_prune(t, density) for t in tensors], weights)


def merge_task_tensors(
    method: str,
    tensors: list[Tensor],
    weights: Tensor,
    *,
    density: float | None = None,
    majority_sign_method: MajoritySignMethod = "total",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Apply one task-arithmetic ``method`` (``linear``, ``ties``, ``dare_linear``, ``dare_ties``,
    ``magnitude_prune``) to ``tensors`` weighted by ``weights``."""
    if method == "linear":
        return task_arithmetic(tensors, weights)
    if method == "ties":
        return ties(tensors, weights, check_density(density, method), majority_sign_method)
    if method == "dare_linear":
        return dare_linear(tensors, weights, check_density(density, method), generator)
    if method == "dare_ties":
        return dare_ties(tensors, weights, check_density(density, method), majority_sign_method, generator)
    if method == "magnitude_prune":
        return magnitude_prune(tensors, weights, check_density(density, method))
    raise MergeError(f"unknown task-arithmetic method {method!r}")
