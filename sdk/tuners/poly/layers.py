"""The Poly layer: ``n_skills`` LoRA modules per ``nn.Linear``, mixed per sample by a learned router.

Tensors in PEFT's shapes and names: ``poly_lora_A`` (n_splits, n_skills, in/n_splits, r),
``poly_lora_B`` (n_splits, n_skills, r, out/n_splits) and the router's ``module_logits``
(n_tasks, n_splits·n_skills), saved as ``poly_router.module_logits``. A sample with task ``t``
gets ``x·A_t·B_t / r`` added, where ``A_t``, ``B_t`` are the skills averaged with the router's
weights for ``t``. The task ids of a call reach the layer through :meth:`begin_call`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ...errors import AdapterStateError, MergeError
from ...layers import AdapterLayer
from .config import PolyConfig
from .router import check_task_ids, mixing_weights

#: The key under which a call's checked task-id range is memoised in its inputs (one check per call).
_CHECKED = "_poly_checked_n_tasks"


class PolyLayer(AdapterLayer):
    """A ``nn.Linear`` plus one Poly adapter per name (skills and router)."""

    call_inputs: ClassVar[tuple[str, ...]] = ("task_ids",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.poly_lora_A = nn.ParameterDict()
        self.poly_lora_B = nn.ParameterDict()
        self.poly_logits = nn.ParameterDict()
        self.shape: dict[str, tuple[int, int, int, int]] = {}  # name -> (r, n_tasks, n_skills, n_splits)
        self._task_ids: Tensor | None = None
        self.in_features: int = base_layer.in_features  # an nn.Linear (the tuner adapts nothing else)
        self.out_features: int = base_layer.out_features

    # --- adapters ------------------------------------------------------------------------
    def add(self, name: str, config: PolyConfig) -> None:
        """Create adapter ``name`` initialised as PEFT does (B zero unless ``init_weights`` is False)."""
        r, q, s = config.r, config.n_splits, config.n_skills
        w = self.base_layer.weight
        dtype = torch.float32 if not w.is_floating_point() else w.dtype
        a = torch.empty(q, s, self.in_features // q, r, dtype=dtype, device=w.device)
        b = torch.zeros(q, s, r, self.out_features // q, dtype=dtype, device=w.device)
        for split in range(q):
            for skill in range(s):
                a[split, skill] = _kaiming(r, self.in_features // q, a).T
                if not config.init_weights:
                    b[split, skill] = _kaiming(self.out_features // q, r, b).T
        logits = torch.empty(config.n_tasks, q * s, dtype=dtype, device=w.device).uniform_(-1e-3, 1e-3)
        self.poly_lora_A[name] = nn.Parameter(a)
        self.poly_lora_B[name] = nn.Parameter(b)
        self.poly_logits[name] = nn.Parameter(logits)
        self.shape[name] = (r, config.n_tasks, s, q)
        self._refresh()

    def adapter_names(self) -> list[str]:
        return list(self.poly_lora_A.keys())

    def adapter_tensors(self, name: str) -> dict[str, Tensor]:
        return {"poly_lora_A": self.poly_lora_A[name], "poly_lora_B": self.poly_lora_B[name],
                "poly_router.module_logits": self.poly_logits[name]}

    def _delete(self, name: str) -> None:
        for table in (self.poly_lora_A, self.poly_lora_B, self.poly_logits):
            del table[name]
        self.shape.pop(name, None)

    # --- per-call inputs -------------------------------------------------------------------
    def begin_call(self, inputs: dict[str, Any]) -> None:
        """Take this call's ``task_ids`` (checked once per call against the smallest ``n_tasks`` here)."""
        task_ids = inputs.get("task_ids")
        if task_ids is not None and self.shape:
            n_tasks = min(t for _, t, _, _ in self.shape.values())
            if inputs.get(_CHECKED, math.inf) > n_tasks:
                check_task_ids(task_ids, n_tasks)
                inputs[_CHECKED] = n_tasks
        self._task_ids = task_ids

    def end_call(self) -> None:
        self._task_ids = None

    # --- forward -------------------------------------------------------------------------
    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        result = self.base_layer(x, *args, **kwargs)
        routing = self._route
        if routing is None and (self.disabled or not self._live):
            return result
        task_ids = self._task_ids
        if task_ids is None:
            raise AdapterStateError("a Poly adapter needs task_ids: call the model with task_ids=<one id per sample>")
        if task_ids.shape[0] != x.shape[0]:
            raise AdapterStateError(f"task_ids has {task_ids.shape[0]} entries but the batch has {x.shape[0]} samples")
        if routing is not None:
            routing.check_batch(x.shape[0])
            for name, idx in routing.members.items():
                if name in self.poly_lora_A:
                    idx = idx.to(x.device)
                    part = self._update(x.index_select(0, idx), task_ids.index_select(0, idx.to(task_ids.device)),
                                        name)
                    result = result.index_add(0, idx, part.to(result.dtype))
            return result
        for name in self._live:
            result = result + self._update(x, task_ids, name).to(result.dtype)
        return result

    def _update(self, x: Tensor, task_ids: Tensor, name: str) -> Tensor:
        """What adapter ``name`` adds to the output for samples with ``task_ids``."""
        r, _, s, q = self.shape[name]
        a, b = self.poly_lora_A[name], self.poly_lora_B[name]
        weights = mixing_weights(self.poly_logits[name], task_ids, q, s, self.training)
        n = x.shape[0]
        mixed_a = torch.einsum("bqs,qsdr->bqdr", weights, a).reshape(n, self.in_features, r)
        mixed_b = torch.einsum("bqs,qsrd->bqrd", weights, b).transpose(1, 2).reshape(n, r, self.out_features)
        h = x.reshape(n, -1, self.in_features).to(a.dtype)
        return (h.bmm(mixed_a).bmm(mixed_b) / r).reshape(*x.shape[:-1], self.out_features)

    # --- merging: refused (the model checks the tuner's merge_refusal first) -------------------------
    def delta_weight(self, name: str) -> Tensor:
        raise MergeError("a Poly adapter mixes its skills per sample, so it has no single ΔW")


def _kaiming(rows: int, cols: int, like: Tensor) -> Tensor:
    """A (rows, cols) matrix initialised like ``nn.Linear``'s weight (Kaiming uniform, a=√5)."""
    t = torch.empty(rows, cols, dtype=like.dtype, device=like.device)
    nn.init.kaiming_uniform_(t, a=math.sqrt(5))
    return t

