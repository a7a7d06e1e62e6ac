"""Poly's router: per-task logits over (split, skill) turned into each sample's mixing weights.

In eval mode a skill's weight is ``sigmoid(logit)``; in training it is a relaxed Bernoulli sample
(temperature 1, reparameterised, so gradients reach the logits), as in PEFT and the Polytropon
paper. Either way the weights of one split are normalised to sum to 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...errors import AdapterStateError

#: Added to the sum before normalising (PEFT's value), so that all-zero weights do not divide by 0.
EPS = 1e-12


def relaxed_bernoulli(logits: Tensor) -> Tensor:
    """A reparameterised relaxed Bernoulli sample at temperature 1 (``torch.distributions.RelaxedBernoulli``)."""
    tiny = torch.finfo(logits.dtype).eps
    u = torch.rand_like(logits).clamp(tiny, 1 - tiny)
    return torch.sigmoid(logits + u.log() - (-u).log1p()).clamp(tiny, 1 - tiny)


def mixing_weights(logits: Tensor, task_ids: Tensor, n_splits: int, n_skills: int, training: bool) -> Tensor:
    """Each sample's weights over the skills, shape (batch, n_splits, n_skills), rows summing to 1."""
    rows = logits.index_select(0, task_ids.to(logits.device)).view(-1, n_splits, n_skills)
    gates = relaxed_bernoulli(rows) if training else torch.sigmoid(rows)
    return gates / (gates.sum(dim=-1, keepdim=True) + EPS)


def check_task_ids(task_ids: object, n_tasks: int) -> Tensor:
    """``task_ids`` as given, once checked: a 1-D integer tensor with every entry in ``[0, n_tasks)``."""
    if not isinstance(task_ids, Tensor) or task_ids.dim() != 1 or task_ids.is_floating_point() \
            or task_ids.dtype == torch.bool:
        raise AdapterStateError(
            f"task_ids must be a 1-D integer tensor with one task id per sample, got {_describe(task_ids)}"
        )
    if task_ids.numel():
        low, high = int(task_ids.min()), int(task_ids.max())
        if low < 0 or high >= n_tasks:
            raise AdapterStateError(
                f"task_ids must be in [0, {n_tasks}) (the adapter's n_tasks), found {low if low < 0 else high}"
            )
    return task_ids


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dim()}-D {value.dtype} tensor"
    return type(value).__name__
