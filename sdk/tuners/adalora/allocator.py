"""AdaLoRA's rank allocation: importance scores, the cubic budget schedule, and pruning.

The state (importance EMAs, kept masks) lives on the layers, so an adapter's schedule needs
nothing but the model, its config and the step number. Functions here run one step of it;
:func:`step` is what :meth:`sdk.AdapterModel.on_step_end` ends up calling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ...errors import AdapterStateError
from .config import MASK_SUFFIX, AdaLoraConfig
from .layers import AdaLoraLayer

Layers = Sequence[tuple[str, AdaLoraLayer]]


def budget_schedule(step: int, config: AdaLoraConfig, init_budget: int, target_budget: int) -> tuple[int, bool]:
    """The total rank budget at ``step`` and whether to prune at it.

    Full budget up to ``tinit``; then ``int((b0 - bT)·(1 - (t - tinit)/(T - tfinal - tinit))³ + bT)``,
    pruning every ``deltaT`` steps; the target budget (pruning every step) after ``T - tfinal``.
    """
    tinit, tfinal, total = config.tinit, config.tfinal, config.total_step
    assert total is not None  # validated by the config
    if step <= tinit:
        return init_budget, False
    if step > total - tfinal:
        return target_budget, True
    remaining = 1 - (step - tinit) / (total - tfinal - tinit)
    budget = int((init_budget - target_budget) * remaining**3 + target_budget)
    return budget, step % config.deltaT == 0


def update_importance(layers: Layers, name: str, beta1: float, beta2: float) -> None:
    """Fold this step's sensitivity |p·∇p| of every factor into the EMAs (Ī with β1, Ū with β2)."""
    params = [(layer, key, p) for _, layer in layers for key, p in _factors(layer, name)]
    if params and all(p.grad is None for _, _, p in params):
        raise AdapterStateError(
            f"AdaLoRA adapter {name!r} has no gradients at on_step_end: call model.on_step_end(step) after "
            "loss.backward() and optimizer.step(), before optimizer.zero_grad()"
        )
    with torch.no_grad():
        for layer, key, p in params:
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            sensitivity = (p * grad).abs()
            state = layer.importance.setdefault(name, {})
            ema, unc = state.get(key) or (torch.zeros_like(p), torch.zeros_like(p))
            if ema.shape != p.shape or ema.device != p.device:
                ema, unc = torch.zeros_like(p), torch.zeros_like(p)
            ema = beta1 * ema + (1 - beta1) * sensitivity
            unc = beta2 * unc + (1 - beta2) * (sensitivity - ema).abs()
            state[key] = (ema, unc)


def triplet_scores(layer: AdaLoraLayer, name: str) -> Tensor:
    """Score of each triplet i: s(Λ_i) + mean of s over row i of Q + mean of s over column i of P."""
    state = layer.importance.get(name, {})

    def score(key: str) -> Tensor:
        got = state.get(key)
        if got is None:
            return torch.zeros_like(getattr(layer, key)[name], dtype=torch.float32)
        return got[0] * got[1]

    rows = score("lora_A").mean(dim=1)
    cols = score("lora_B").mean(dim=0)
    return score("lora_E").view(-1) + (rows + cols)


def mask_to_budget(layers: Layers, name: str, budget: int) -> dict[str, list[bool]]:
    """Zero Λ of the lowest-scored triplets so that about ``budget`` remain; the masks by module."""
    scores = {path: triplet_scores(layer, name) for path, layer in layers}
    init_budget = sum(layer.r[name] for _, layer in layers)
    k = init_budget - budget
    if k > 0:
        threshold = torch.kthvalue(torch.cat([s.view(-1).float().cpu() for s in scores.values()]), k)[0].item()
    else:
        threshold = float("-inf")
    pattern: dict[str, list[bool]] = {}
    with torch.no_grad():
        for path, layer in layers:
            keep = scores[path] > threshold
            layer.lora_E[name].masked_fill_(~keep.view(-1, 1), 0.0)
            pattern[path + MASK_SUFFIX] = keep.tolist()
    return pattern


def apply_pattern(layers: Layers, name: str, pattern: dict[str, list[bool]]) -> None:
    """Re-zero the pruned entries of Λ (after the final allocation the optimizer may revive them)."""
    with torch.no_grad():
        for path, layer in layers:
            mask = pattern.get(path + MASK_SUFFIX)
            if mask is not None:
                keep = torch.tensor(mask, dtype=torch.bool, device=layer.lora_E[name].device)
                layer.lora_E[name].masked_fill_(~keep.view(-1, 1), 0.0)


def record_pattern(layers: Layers, name: str, pattern: dict[str, list[bool]]) -> None:
    """Remember the masks on the layers, so that saving cuts the factors to the kept triplets."""
    for path, layer in layers:
        mask = pattern.get(path + MASK_SUFFIX)
        if mask is not None:
            layer.keep[name] = torch.tensor(mask, dtype=torch.bool)


def step(layers: Layers, config: AdaLoraConfig, name: str, global_step: int) -> None:
    """One step of the schedule (PEFT's ``update_and_allocate``), updating ``config.rank_pattern``."""
    total, tfinal = config.total_step, config.tfinal
    assert total is not None
    final = total - tfinal
    if global_step > final:
        if config.rank_pattern:
            apply_pattern(layers, name, config.rank_pattern)
        return
    if global_step < final:
        update_importance(layers, name, config.beta1, config.beta2)
    init_budget = sum(layer.r[name] for _, layer in layers)
    budget, prune = budget_schedule(global_step, config, init_budget, config.target_r * len(layers))
    if not (prune or global_step == final):
        return
    pattern = mask_to_budget(layers, name, budget)
    config.rank_pattern = pattern
    record_pattern(layers, name, pattern)
    if global_step == final:
        for _, layer in layers:
            layer.importance.pop(name, None)


def orthogonal_penalty(layers: Layers, name: str) -> Tensor | None:
    """Mean over every Q and P of ‖QQᵀ − I‖_F and ‖PᵀP − I‖_F (keeps the factors near-orthogonal)."""
    terms: list[Tensor] = []
    for _, layer in layers:
        for cov in (layer.lora_A[name] @ layer.lora_A[name].T, layer.lora_B[name].T @ layer.lora_B[name]):
            eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
            terms.append(torch.linalg.matrix_norm(cov - eye, ord="fro"))
    if not terms:
        return None
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total / len(terms)


def _factors(layer: AdaLoraLayer, name: str) -> list[tuple[str, Tensor]]:
    return [("lora_A", layer.lora_A[name]), ("lora_B", layer.lora_B[name]), ("lora_E", layer.lora_E[name])]
