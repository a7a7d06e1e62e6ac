"""Combining LoRA adapters into one new LoRA adapter (PEFT's ``add_weighted_adapter``), as pure functions.

Inputs are adapters as they lie on disk: a state dict with PEFT's keys
(``base_model.model.<path>.lora_A.weight`` …) and its config, read once into plain
:class:`~sdk.merging.options.LoraSettings`; how to combine is one
:class:`~sdk.merging.options.CombineOptions`. The output is a new state dict and a new config, so
the SDK (:meth:`AdapterModel.add_weighted_adapter`) and the registry's merge jobs share one
implementation and neither needs the base model.
:func:`combine_lora_adapters` is built from two steps that can be used alone:
:func:`plan_lora_combination` checks the inputs and decides the new config (every module's rank)
without computing tensors, and :func:`iter_combined_tensors` then yields the tensors module by
module, so a caller can allocate the new adapter first and fill it without holding a second copy.

Combination types (``weights[i]`` is the weight of adapter ``i``, ``s_i`` its LoRA scale):

- ``cat``: A = [w_i·s_i·A_i] stacked on the rank axis, B = [B_i] side by side; exact, rank Σ r_i.
- ``linear``, ``ties``, ``dare_linear``, ``dare_ties``, ``magnitude_prune``: the method is applied to
  the A factors with weights ``sign(w_i)·sqrt(|w_i·s_i|)`` and to the B factors with weights
  ``sqrt(|w_i·s_i|)`` separately (an approximation: cross terms A_i·B_j appear); needs equal ranks.
- ``svd`` and the ``*_svd`` forms: the method is applied to the full ΔW_i = s_i·B_i·A_i, and the
  result is factored again by a truncated SVD of rank ``svd_rank`` (default: the largest input rank).

The new adapter has ``lora_alpha == r`` (scale 1), so its tensors carry every scale. Results equal
PEFT 0.21's on the same inputs; the random masks of the ``dare_*`` types come from ``generator``
(the global RNG when ``None``) in the order PEFT draws them (module by module in ``module_order``;
per module the A factors of each adapter, then the B factors; for ``*_svd`` one ΔW per adapter).

Where we differ from PEFT on purpose: a trained ``modules_to_save`` copy (at most one adapter may
have one per module, as in PEFT) is carried over into the result, where PEFT gives the new adapter
an untrained copy of the base module; the result never uses rsLoRA (PEFT keeps the first input's
``use_rslora``, which rescales the combined adapter by sqrt(r)); per-module ranks that differ from
``r`` are written into ``rank_pattern``/``alpha_pattern`` so the result loads again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import AdapterConfig
from ..errors import MergeError
from ..formats import PREFIX
from .lora_keys import group_lora_tensors
from .options import (
    COMBINATION_TYPES,
    DENSITY_TYPES,
    FACTOR_TYPES,
    CombinationType,
    CombineOptions,
    LoraSettings,
    combinable,
)
from .task_arithmetic import MajoritySignMethod, check_density, merge_task_tensors


@dataclass(frozen=True)
class LoraFactors:
    """One module's LoRA factors in one adapter: A (r×in…), B (out×r…) and the module's scale."""

    a: Tensor
    b: Tensor
    embedding: bool
    scaling: float
    #: Whether the base weight is stored in×out (embeddings; Conv1D / ``fan_in_fan_out``).
    transposed: bool = False

    @property
    def rank(self) -> int:
        """The factors' rank ``r``."""
        return int(self.a.shape[0])

    def delta_2d(self) -> Tensor:
        """ΔW = s·B·A in float32 as a 2-D out×in matrix (conv kernels flattened into ``in``)."""
        return (self.b.flatten(1).float() @ self.a.flatten(1).float()) * self.scaling


@dataclass
class SplitAdapter:
    """An adapter's state dict grouped by module: LoRA factors, and the other tensors it carries."""

    factors: dict[str, LoraFactors]
    other: dict[str, Tensor]


def split_lora_state_dict(
    tensors: Mapping[str, Tensor], settings: LoraSettings, *, where: str = "adapter"
) -> SplitAdapter:
    """Group a PEFT-format LoRA state dict by module path (keys with or without ``base_model.model.``).

    Tensors that are not LoRA factors (``modules_to_save`` copies) are kept under their key
    without the prefix. A factor without its partner is an error.
    """
    halves, other = group_lora_tensors(tensors, PREFIX)
    factors: dict[str, LoraFactors] = {}
    for path, pair in halves.items():
        if set(pair) != {"a", "b"}:
            missing = "B" if "a" in pair else "A"
            raise MergeError(f"{where}: module {path!r} has a LoRA {'AB'.replace(missing, '')} factor but no {missing}")
        (a, emb_a), (b, emb_b) = pair["a"], pair["b"]
        if emb_a != emb_b:
            raise MergeError(f"{where}: module {path!r} mixes lora_A/B and lora_embedding_A/B tensors")
        if a.shape[0] != b.shape[1] or a.dim() != b.dim():
            raise MergeError(
                f"{where}: module {path!r} has A {tuple(a.shape)} and B {tuple(b.shape)}, whose ranks do not agree"
            )
        transposed = emb_a or (bool(settings.fan_in_fan_out) and a.dim() == 2)
        factors[path] = LoraFactors(a, b, emb_a, settings.scaling_for(path, int(a.shape[0])), transposed)
    return SplitAdapter(factors, other)


def _check_inputs(
    state_dicts: Sequence[Mapping[str, Tensor]], configs: Sequence[AdapterConfig], weights: Sequence[float]
) -> tuple[list[LoraSettings], list[float]]:
    """The inputs' settings and weights, once every adapter is known to be combinable."""
    if not state_dicts:
        raise MergeError("no adapters to combine; pass at least one")
    if len(configs) != len(state_dicts):
        raise MergeError(f"got {len(state_dicts)} state dicts but {len(configs)} configs; give one config per adapter")
    if len(weights) != len(state_dicts):
        raise MergeError(f"got {len(weights)} weights for {len(state_dicts)} adapters; give one weight per adapter")
    methods = sorted({c.peft_type for c in configs})
    if len(methods) > 1:
        raise MergeError(f"cannot combine adapters of different methods {methods}; all must be LORA")
    for i, config in enumerate(configs):
        problems = combinable(config, f"adapter {i}")
        if problems:
            raise MergeError(problems[0].message)
    out: list[float] = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)):
            raise MergeError(f"weights[{i}] must be a finite number, got {w!r}")
        out.append(float(w))
    return [LoraSettings.from_config(c) for c in configs], out


def _new_rank(combination_type: str, settings: Sequence[LoraSettings], svd_rank: int | None) -> int:
    ranks = [s.max_rank for s in settings]
    if combination_type in FACTOR_TYPES:
        if len(set(ranks)) != 1:
            raise MergeError(
                f"combination_type {combination_type!r} needs adapters of one rank, got ranks {ranks}; "
                "use 'cat' or an '*svd' type for adapters of different ranks"
            )
        return ranks[0]
    if combination_type == "cat":
        return sum(ranks)
    if svd_rank is not None:
        if isinstance(svd_rank, bool) or not isinstance(svd_rank, int) or svd_rank <= 0:
            raise MergeError(f"`svd_rank` must be a positive integer, got {svd_rank!r}")
        return svd_rank
    return max(ranks)


def _target_names(settings: LoraSettings, split: SplitAdapter) -> list[str] | str:
    """``target_modules`` as PEFT holds it after injection: ``None``/``"all-linear"`` become the names found."""
    tm = settings.target_modules
    if tm is None or (isinstance(tm, str) and tm.lower() == "all-linear"):
        return sorted({p.rsplit(".", 1)[-1] for p in split.factors})
    return tm


def _new_targets(
    settings: Sequence[LoraSettings], splits: Sequence[SplitAdapter], paths: Sequence[str]
) -> dict[str, object]:
    """Target selection of the combined adapter: the inputs' union (as PEFT builds it), or, when the inputs
    filter layers/modules differently, a full-match regex of exactly the combined module paths."""
    names = [_target_names(c, s) for c, s in zip(settings, splits, strict=True)]
    kinds = {isinstance(n, str) for n in names}
    if len(kinds) > 1:
        raise MergeError(
            "the adapters' target_modules mix lists of names and regex strings; combining them is not supported "
            f"(got {[c.target_modules for c in settings]})"
        )
    filters = {(repr(c.exclude_modules), repr(c.layers_to_transform), repr(c.layers_pattern)) for c in settings}
    if len(filters) > 1:
        return {
            "target_modules": "|".join(re.escape(p) for p in paths),
            "exclude_modules": None, "layers_to_transform": None, "layers_pattern": None,
        }
    if kinds == {True}:
        target: object = "|".join(f"({n})" for n in names) if len(names) > 1 else names[0]
    else:
        target = sorted(set().union(*names))
    return {"target_modules": target}


def _pad_rank(t: Tensor, rank: int, dim: int) -> Tensor:
    if t.shape[dim] == rank:
        return t
    shape = list(t.shape)
    shape[dim] = rank - t.shape[dim]
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def _cat(present: list[tuple[float, LoraFactors]], rank: int) -> tuple[Tensor, Tensor]:
    a = torch.cat([f.a * w * f.scaling for w, f in present], dim=0)
    b = torch.cat([f.b for _, f in present], dim=1)
    return _pad_rank(a, rank, 0), _pad_rank(b, rank, 1)


def _factorwise(method: str, present: list[tuple[float, LoraFactors]], options: CombineOptions
                ) -> tuple[Tensor, Tensor]:
    scaled = [w * f.scaling for w, f in present]
    w_a = torch.tensor([math.copysign(math.sqrt(abs(s)), 1.0 if s >= 0 else -1.0) for s in scaled])
    w_b = torch.tensor([math.sqrt(abs(s)) for s in scaled])
    dtype = present[0][1].a.dtype
    a = _merge_tensors(method, [f.a for _, f in present], w_a, options)
    b = _merge_tensors(method, [f.b for _, f in present], w_b, options)
    return a.to(dtype), b.to(dtype)


def _merge_tensors(method: str, tensors: list[Tensor], weights: Tensor, options: CombineOptions) -> Tensor:
    return merge_task_tensors(method, tensors, weights, density=options.density,
                              majority_sign_method=options.majority_sign_method, generator=options.generator)


def _svd(method: str, present: list[tuple[float, LoraFactors]], k: int, options: CombineOptions
         ) -> tuple[Tensor, Tensor]:
    first = present[0][1]
    # ΔW in the base weight's own layout while merging (random masks and top-k then fall where PEFT's do)
    flip = any(f.transposed for _, f in present)
    deltas = [f.delta_2d().T if flip else f.delta_2d() for _, f in present]
    weights = torch.tensor([w for w, _ in present])
    base = "linear" if method == "svd" else method.removesuffix("_svd")
    delta = _merge_tensors(base, deltas, weights, options)
    del deltas
    if flip:
        delta = delta.T
    u, s, vh = torch.linalg.svd(delta, full_matrices=options.svd_full_matrices, driver=options.svd_driver)
    del delta
    u = u[:, :k] @ torch.diag(s[:k])
    vh = vh[:k, :]
    if options.svd_clamp is not None:
        hi = torch.quantile(torch.cat([u.flatten(), vh.flatten()]), options.svd_clamp)
        u, vh = u.clamp(-hi, hi), vh.clamp(-hi, hi)
    b = u.reshape(u.shape[0], k, *first.b.shape[2:])
    a = vh.reshape(k, *first.a.shape[1:])
    return a.to(first.a.dtype), b.to(first.a.dtype)


@dataclass(frozen=True)
class CombinePlan:
    """A checked combination, decided before any tensor is computed: the new adapter's config (with
    every module's rank) and what :func:`iter_combined_tensors` needs to compute its tensors.

    Made by :func:`plan_lora_combination`; holds the inputs' tensors by reference (no copies).
    """

    config: AdapterConfig
    #: The type applied (``linear`` for a single adapter, as in PEFT).
    combination_type: str
    #: The modules to combine in order (the order of the ``dare_*`` masks), each with its
    #: ``(weight, factors)`` of the adapters that have it and its rank in the result.
    modules: tuple[tuple[str, tuple[tuple[float, LoraFactors], ...], int], ...]
    #: ``modules_to_save`` copies carried over as they are: ``(key without PREFIX, tensor)``.
    copies: tuple[tuple[str, Tensor], ...]
    rank: int
    options: CombineOptions


def _module_rank(
    combination_type: str, path: str, present: Sequence[tuple[float, LoraFactors]], rank: int
) -> int:
    """The rank module ``path`` gets in the result (checking that its factors can be combined)."""
    first = present[0][1]
    for _, f in present[1:]:
        if f.embedding != first.embedding or f.a.shape[1:] != first.a.shape[1:] or f.b.shape[0] != first.b.shape[0]:
            raise MergeError(
                f"module {path!r}: the adapters' factors do not fit one layer (A {tuple(first.a.shape)} vs "
                f"{tuple(f.a.shape)}, B {tuple(first.b.shape)} vs {tuple(f.b.shape)})"
            )
    if combination_type == "cat":
        return rank  # stacked ranks, zero-padded up to the sum of the configs' ranks
    if combination_type in FACTOR_TYPES:
        ranks = {f.rank for _, f in present}
        if len(ranks) > 1:
            raise MergeError(
                f"module {path!r}: combination_type {combination_type!r} needs one rank, the adapters have "
                f"{sorted(ranks)}"
            )
        return first.rank
    # the truncated SVD of the out×in ΔW has at most min(out, in) singular values
    return min(rank, int(first.b.shape[0]), math.prod(first.a.shape[1:]))


def plan_lora_combination(
    state_dicts: Sequence[Mapping[str, Tensor]], configs: Sequence[AdapterConfig], options: CombineOptions
) -> CombinePlan:
    """Check a combination and decide the new adapter's config, computing no tensors.

    ``state_dicts[i]`` (PEFT keys) and ``configs[i]`` describe adapter ``i``. Every input problem
    is raised here (as :class:`~sdk.errors.MergeError`), so a caller can allocate the new adapter
    from ``plan.config`` first and then fill it from :func:`iter_combined_tensors`.
    """
    settings, ws = _check_inputs(state_dicts, configs, options.weights)
    combination_type, density = options.combination_type, options.density
    if combination_type not in COMBINATION_TYPES:
        raise MergeError(f"unknown combination_type {combination_type!r}; choose one of {list(COMBINATION_TYPES)}")
    if options.majority_sign_method not in ("total", "frequency"):
        raise MergeError(
            f"majority_sign_method must be 'total' or 'frequency', got {options.majority_sign_method!r}"
        )
    if density is not None:
        check_density(density, combination_type)
    clamp = options.svd_clamp
    if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, (int, float))
                              or not 0.0 <= clamp <= 1.0):
        raise MergeError(f"`svd_clamp` must be a quantile in [0, 1], got {clamp!r}")
    if len(state_dicts) == 1:
        combination_type = "linear"
    elif combination_type in DENSITY_TYPES:
        check_density(density, combination_type)
    rank = _new_rank(combination_type, settings, options.svd_rank)
    splits = [
        split_lora_state_dict(sd, c, where=f"adapter {i}")
        for i, (sd, c) in enumerate(zip(state_dicts, settings, strict=True))
    ]
    for i, s in enumerate(splits):
        if not s.factors:
            raise MergeError(
                f"adapter {i} has no LoRA factors (lora_A/lora_B tensors); is it a LoRA adapter state dict?"
            )

    seen: dict[str, None] = {}
    for p in options.module_order or ():
        if any(p in s.factors for s in splits):
            seen.setdefault(p, None)
    for s in splits:
        for p in s.factors:
            seen.setdefault(p, None)
    paths = list(seen)

    modules = []
    for path in paths:
        present = tuple((w, s.factors[path]) for w, s in zip(ws, splits, strict=True) if path in s.factors)
        modules.append((path, present, _module_rank(combination_type, path, present, rank)))

    owner: dict[str, int] = {}
    copies: list[tuple[str, Tensor]] = []
    for i, s in enumerate(splits):
        for key, tensor in s.other.items():
            if key in owner:
                raise MergeError(
                    f"adapters {owner[key]} and {i} both train {key!r} in full (modules_to_save); such copies "
                    "cannot be combined"
                )
            owner[key] = i
            copies.append((key, tensor))

    first = configs[0]
    config = first.copy(**_config_changes(settings, splits, paths, rank, {path: r for path, _, r in modules}))
    config.extra = dict(first.extra)
    return CombinePlan(config, combination_type, tuple(modules), tuple(copies), rank, options)


def iter_combined_tensors(plan: CombinePlan) -> Iterator[tuple[str, Tensor]]:
    """Compute the planned adapter's tensors one module at a time, as ``(PEFT key, tensor)`` pairs.

    Each module's A then B are freshly computed (the ``dare_*`` masks are drawn in module order);
    the ``modules_to_save`` copies come last and are the inputs' own tensors (detached, not copied),
    so copy them before changing them. Consuming the pairs one by one keeps at most one module's
    results alive, which is how :meth:`AdapterModel.add_weighted_adapter` fills its new adapter.
    """
    ct = plan.combination_type
    for path, present, k in plan.modules:
        pairs = list(present)
        if ct == "cat":
            a, b = _cat(pairs, k)
        elif ct in FACTOR_TYPES:
            a, b = _factorwise(ct, pairs, plan.options)
        else:
            a, b = _svd(ct, pairs, k, plan.options)
        a_key, b_key = (
            ("lora_embedding_A", "lora_embedding_B") if present[0][1].embedding else ("lora_A.weight", "lora_B.weight")
        )
        yield f"{PREFIX}{path}.{a_key}", a.contiguous()
        del a
        yield f"{PREFIX}{path}.{b_key}", b.contiguous()
        del b
    for key, tensor in plan.copies:
        yield PREFIX + key, tensor.detach()


def combine_lora_adapters(
    state_dicts: Sequence[Mapping[str, Tensor]], configs: Sequence[AdapterConfig], weights: Sequence[float],
    combination_type: CombinationType = "svd", *, svd_rank: int | None = None, svd_clamp: float | None = None,
    svd_full_matrices: bool = True, svd_driver: str | None = None, density: float | None = None,
    majority_sign_method: MajoritySignMethod = "total", generator: torch.Generator | None = None,
    module_order: Sequence[str] | None = None, verify: bool = False,
) -> tuple[dict[str, Tensor], AdapterConfig]:
    """Combine LoRA adapters into a new one; returns ``(state_dict, config)`` in PEFT's on-disk form.

    ``state_dicts[i]`` (PEFT keys) and ``configs[i]`` describe adapter ``i``; the other arguments
    are :class:`~sdk.merging.options.CombineOptions`' (PEFT's ``add_weighted_adapter`` keywords).
    With a single adapter the type is always ``linear`` (as in PEFT); seed ``generator`` for
    reproducible ``dare_*`` results. Inputs are never modified (nor shared with the result).
    Raises :class:`~sdk.errors.MergeError` naming the problem. Built on
    :func:`plan_lora_combination` and :func:`iter_combined_tensors`. With ``verify=True`` the result is
    checked on probe inputs (:func:`sdk.merging.verify.check_combination`, the registry's merge-job check):
    a module that breaks the combination's promise raises :class:`~sdk.merging.verify.MergeCheckFailed`.
    """
    plan = plan_lora_combination(state_dicts, configs, CombineOptions(
        weights, combination_type, svd_rank=svd_rank, svd_clamp=svd_clamp, svd_full_matrices=svd_full_matrices,
        svd_driver=svd_driver, density=density, majority_sign_method=majority_sign_method, generator=generator,
        module_order=module_order,
    ))
    copied = {PREFIX + key for key, _ in plan.copies}
    out = {key: tensor.clone() if key in copied else tensor for key, tensor in iter_combined_tensors(plan)}
    if verify:
        from .verify import check_combination

        check_combination([(sd, LoraSettings.from_config(c)) for sd, c in zip(state_dicts, configs, strict=True)],
                          list(weights), plan.combination_type, out, LoraSettings.from_config(plan.config))
    return out, plan.config


def _config_changes(
    settings: Sequence[LoraSettings], splits: Sequence[SplitAdapter], paths: Sequence[str], rank: int,
    ranks: Mapping[str, int],
) -> dict[str, Any]:
    """What the combined adapter's config changes in the first input's: ranks, scale 1, targets, copies."""
    odd = {re.escape(p): r for p, r in ranks.items() if r != rank}
    mts: list[str] = []
    for c in settings:
        for name in c.modules_to_save or ():
            if name not in mts:
                mts.append(name)
    return {
        "r": rank, "lora_alpha": rank, "use_rslora": False, "rank_pattern": dict(odd), "alpha_pattern": dict(odd),
        "modules_to_save": mts or None, **_new_targets(settings, splits, paths),
    }


__all__ = [
    "CombinePlan",
    "LoraFactors",
    "SplitAdapter",
    "combine_lora_adapters",
    "iter_combined_tensors",
    "plan_lora_combination",
    "split_lora_state_dict",
]
