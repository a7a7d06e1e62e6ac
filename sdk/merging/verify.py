"""Checking a merge result on random probe inputs: what was written does what the merge promises.

Two checks, shared by the SDK (``verify=True``) and the registry's merge jobs (which run them on the
bytes they are about to publish, read back from disk):

- :func:`check_combination`: a combined LoRA adapter against its inputs. For every module the
  result's output change on random probes ``x`` (``s·B·A·x``, its scale read from the result's own
  config, so a wrong ``rank_pattern``/``alpha_pattern`` shows) is compared with the weighted sum of
  the inputs' changes ``Σ wᵢ·sᵢ·Bᵢ·Aᵢ·x``. ``cat`` (and any single-input merge) promises exactly
  that sum: a module whose relative error passes the tolerance of the result's dtype fails the
  check. Multi-input ``linear`` promises PEFT's factor-wise sum ``(Σ√|wᵢsᵢ|·Bᵢ)(Σ±√|wᵢsᵢ|·Aᵢ)``
  (which has cross terms): that is checked exactly, and the error against the weighted sum is
  measured. The other types (``svd``, ``ties``, ``dare_*``, ``magnitude_prune``, ``*_svd``) are
  approximations by design: their error is measured and recorded; only a missing module or a
  non-finite output fails them.
- :func:`check_merged_weights`: base weights with a LoRA merged in, against ``W·x + ΔW·x`` on
  probes (ΔW from the adapter's factors and its config's scale: ``use_rslora``, ``alpha_pattern``,
  ``rank_pattern``), within the rounding of the weight's dtype.

Probes are drawn from a seeded generator, computed in float64 through the factors (no dense ΔW),
so a check costs ``O(probes · r · (in + out))`` per module.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import MergeError
from .lora_keys import group_lora_tensors
from .options import LoraSettings

#: Probe vectors per module.
PROBES = 4
#: Combination types whose result is exactly the weighted sum of the inputs' changes.
EXACT_TYPES = frozenset({"cat"})
CheckKind = Literal["exact", "factorwise", "approximate", "into-base"]


class MergeCheckFailed(MergeError):
    """A merge result does not do what the merge promises; ``module`` names the first module that fails."""

    def __init__(self, message: str, module: str) -> None:
        super().__init__(message)
        self.module = module


@dataclass
class MergeCheck:
    """The outcome of a check: what was promised, the tolerance, and the relative error per module."""

    kind: CheckKind
    #: the largest relative error that passes (``None``: measured only)
    tolerance: float | None
    probes: int
    seed: int
    #: module path -> relative error of its output change against the weighted sum (or ``W·x + ΔW·x``)
    modules: dict[str, float] = field(default_factory=dict)

    @property
    def max_relative_error(self) -> float:
        """The largest error over the modules (0 when there are none)."""
        return max(self.modules.values(), default=0.0)

    def to_json(self) -> dict[str, Any]:
        """A JSON form (``merge_recipe.json``, the version's JSON); errors rounded to 4 significant digits."""
        return {"kind": self.kind, "tolerance": self.tolerance, "probes": self.probes, "seed": self.seed,
                "max_relative_error": _round(self.max_relative_error),
                "modules": {k: _round(v) for k, v in self.modules.items()}}


def _round(x: float) -> float | str:
    return float(f"{x:.4g}") if math.isfinite(x) else str(x)


def dtype_tolerance(dtype: torch.dtype) -> float:
    """The relative error a result stored in ``dtype`` may have: a few units of its rounding, at least 1e-5."""
    if not dtype.is_floating_point:
        return 1e-5
    return max(1e-5, 8 * torch.finfo(dtype).eps)


def _relative(err: Tensor, ref: Tensor) -> float:
    denominator = float(ref.norm())
    numerator = float(err.norm())
    if not math.isfinite(numerator):
        return math.inf
    if denominator == 0.0:
        return 0.0 if numerator == 0.0 else math.inf
    return numerator / denominator


@dataclass(frozen=True)
class _Factors:
    a: Tensor  # r × in (flattened), as stored
    b: Tensor  # out × r (flattened), as stored
    scaling: float


def _factors(tensors: Mapping[str, Tensor], settings: LoraSettings, where: str) -> tuple[dict[str, _Factors],
                                                                                         dict[str, Tensor]]:
    from ..formats import PREFIX

    halves, other = group_lora_tensors(tensors, PREFIX)
    out: dict[str, _Factors] = {}
    for path, pair in halves.items():
        if set(pair) != {"a", "b"}:
            raise MergeCheckFailed(f"{where}: module {path!r} has only one of its two LoRA factors", path)
        a, b = pair["a"][0], pair["b"][0]
        out[path] = _Factors(a.flatten(1), b.flatten(1), settings.scaling_for(path, int(a.shape[0])))
    return out, other


def _probes(n_in: int, count: int, generator: torch.Generator) -> Tensor:
    return torch.randn(n_in, count, generator=generator, dtype=torch.float64)


def _apply(f: _Factors, x: Tensor) -> Tensor:
    """``s·B·A·x`` in float64 (one module's factors converted at a time)."""
    return f.b.double() @ (f.a.double() @ x) * f.scaling


def check_combination(
    inputs: Sequence[tuple[Mapping[str, Tensor], LoraSettings]], weights: Sequence[float], combination_type: str,
    result: Mapping[str, Tensor], result_settings: LoraSettings, *, probes: int = PROBES, seed: int = 0,
) -> MergeCheck:
    """Check a combined adapter ``result`` (PEFT keys, with its settings as read from its config) against
    ``inputs`` combined with ``weights`` by ``combination_type``. Raises :class:`MergeCheckFailed` naming the
    first module whose result breaks the promise (see the module docstring); returns the measured errors."""
    if len(inputs) != len(weights):
        raise MergeError(f"got {len(weights)} weights for {len(inputs)} inputs")
    single = len(inputs) == 1
    kind: CheckKind = ("exact" if single or combination_type in EXACT_TYPES
                       else "factorwise" if combination_type == "linear" else "approximate")
    got, got_other = _factors(result, result_settings, "the merged adapter")
    dtypes = {t.dtype for t in result.values()}
    tolerance = max(dtype_tolerance(d) for d in dtypes) if dtypes else 1e-5
    check = MergeCheck(kind, tolerance if kind != "approximate" else None, probes, seed)
    parts = [_factors(sd, s, f"input {i}") for i, (sd, s) in enumerate(inputs)]
    paths: dict[str, None] = {}
    for factors, _ in parts:
        paths.update(dict.fromkeys(factors))
    extra = sorted(set(got) - set(paths))
    if extra:
        raise MergeCheckFailed(f"module {extra[0]!r}: the merged adapter changes it, but no input does", extra[0])
    generator = torch.Generator().manual_seed(seed)
    for path in paths:
        if path not in got:
            raise MergeCheckFailed(f"module {path!r}: the inputs change it, but the merged adapter lacks it", path)
        mine = got[path]
        present = [(float(w), p[0][path]) for w, p in zip(weights, parts, strict=True) if path in p[0]]
        x = _probes(mine.a.shape[1], probes, generator)
        for _, f in present:
            if f.a.shape[1] != mine.a.shape[1] or f.b.shape[0] != mine.b.shape[0]:
                raise MergeCheckFailed(f"module {path!r}: the merged factors {tuple(mine.b.shape)}·"
                                       f"{tuple(mine.a.shape)} do not fit the inputs' {tuple(f.b.shape)}·"
                                       f"{tuple(f.a.shape)}", path)
        y = _apply(mine, x)
        target = sum((w * _apply(f, x) for w, f in present), torch.zeros_like(y))
        error = _relative(y - target, target)
        check.modules[path] = error
        if kind == "approximate":
            if not math.isfinite(error):
                raise MergeCheckFailed(f"module {path!r}: the merged adapter's output is not finite on probe inputs",
                                       path)
            continue
        promised = target if kind == "exact" else _factorwise(present, x)
        promise_error = _relative(y - promised, promised)
        if not promise_error <= tolerance:
            what = "the weighted sum of the inputs' changes" if kind == "exact" else "PEFT's factor-wise linear sum"
            raise MergeCheckFailed(
                f"module {path!r}: on probe inputs the merged adapter's output change is {promise_error:.3g} away "
                f"(relative) from {what}; at most {tolerance:.3g} is allowed", path)
    owners = {k: t for _, other in parts for k, t in other.items()}
    for key, tensor in got_other.items():
        if key not in owners or owners[key].shape != tensor.shape or not torch.equal(owners[key].to(tensor.dtype),
                                                                                     tensor):
            raise MergeCheckFailed(f"{key!r}: the merged adapter's copy is not the input's", key)
    missing = sorted(set(owners) - set(got_other))
    if missing:
        raise MergeCheckFailed(f"{missing[0]!r}: an input carries this copy, the merged adapter does not", missing[0])
    return check


def _factorwise(present: Sequence[tuple[float, _Factors]], x: Tensor) -> Tensor:
    """``(Σ √|wᵢsᵢ|·Bᵢ)(Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ)·x``: what PEFT's ``linear`` combination gives."""
    first = present[0][1]
    a = sum((math.copysign(math.sqrt(abs(w * f.scaling)), w * f.scaling) * f.a.double() for w, f in present),
            torch.zeros(first.a.shape, dtype=torch.float64))
    b = sum((math.sqrt(abs(w * f.scaling)) * f.b.double() for w, f in present),
            torch.zeros(first.b.shape, dtype=torch.float64))
    return b @ (a @ x)


def _layout(w: Tensor, a: Tensor, b: Tensor, fan_in_fan_out: bool) -> str | None:
    """The layout of a 2-D weight the factors fit when no kind was given (a square one: Conv1D with
    ``fan_in_fan_out``, else Linear), as :mod:`.into_base` decides it."""
    linear, conv1d = w.shape == (b.shape[0], a.shape[1]), w.shape == (a.shape[1], b.shape[0])
    if linear and conv1d:
        return "conv1d" if fan_in_fan_out else "linear"
    return "linear" if linear else "conv1d" if conv1d else None


def check_merged_weights(
    read_base: Callable[[str], Tensor], read_merged: Callable[[str], Tensor], adapter: Mapping[str, Tensor],
    settings: LoraSettings, kinds: Mapping[str, str], *, weight: float = 1.0, probes: int = PROBES, seed: int = 0,
) -> MergeCheck:
    """Check base weights with a LoRA merged in: for every adapted module, ``W'·x`` against ``W·x + ΔW·x``.

    ``read_base(name)``/``read_merged(name)`` return one tensor of the base files and of the merged files;
    ``adapter`` is the LoRA's PEFT state dict with its ``settings``; ``kinds[path]`` the layer kind
    (``linear``, ``conv1d``, ``embedding``, ``conv2d``) as the merge used it. The error allowed is
    :func:`dtype_tolerance` of the weight's dtype, relative to ``|W'|·|x|`` (what rounding to that dtype
    can change). Copies the adapter carries (``modules_to_save``) must equal the merged tensor.
    Raises :class:`MergeCheckFailed` naming the first tensor that fails."""
    from ..formats import PREFIX

    halves, other = group_lora_tensors(adapter, PREFIX)
    generator = torch.Generator().manual_seed(seed)
    check = MergeCheck("into-base", None, probes, seed)
    worst_tolerance = 0.0
    for path, pair in halves.items():
        name = f"{path}.weight"
        (a, embedding), (b, _) = pair["a"], pair["b"]
        base, merged = read_base(name), read_merged(name)
        if merged.shape != base.shape or merged.dtype != base.dtype:
            raise MergeCheckFailed(f"{name}: the merged tensor is {merged.dtype} {tuple(merged.shape)}, the base "
                                   f"{base.dtype} {tuple(base.shape)}", name)
        scale = settings.scaling_for(path, int(a.shape[0])) * weight
        w, wm = base.flatten(1).double(), merged.flatten(1).double()
        a2, b2 = a.flatten(1).double(), b.flatten(1).double()
        kind = "embedding" if embedding else kinds.get(path) or _layout(w, a2, b2, settings.fan_in_fan_out)
        if kind is None or w.shape != ((a2.shape[1], b2.shape[0]) if kind in ("conv1d", "embedding")
                                       else (b2.shape[0], a2.shape[1])):
            raise MergeCheckFailed(f"{name}: the adapter's factors {tuple(b.shape)}·{tuple(a.shape)} do not fit the "
                                   f"weight {tuple(base.shape)} ({kind or 'no layout fits'})", name)
        x = _probes(w.shape[1], probes, generator)
        if kind in ("conv1d", "embedding"):  # weight in×out: ΔW = (B·A)ᵀ
            delta = a2.T @ (b2.T @ x) * scale
        else:
            delta = b2 @ (a2 @ x) * scale
        expected = w @ x + delta
        got = wm @ x
        tolerance = dtype_tolerance(merged.dtype)
        worst_tolerance = max(worst_tolerance, tolerance)
        bound = _relative(got - expected, wm.abs() @ x.abs())
        check.modules[name] = _relative(got - expected, expected)
        if not bound <= tolerance:
            raise MergeCheckFailed(
                f"{name}: on probe inputs the merged weight is {bound:.3g} away (relative to |W'|·|x|) from "
                f"W + ΔW; at most {tolerance:.3g} ({merged.dtype}) is allowed", name)
    for path, tensor in other.items():
        name = path.replace(".base_layer.", ".")
        merged = read_merged(name)
        if not torch.equal(merged, tensor.to(merged.dtype)):
            raise MergeCheckFailed(f"{name}: the merged tensor is not the adapter's copy of it", name)
    check.tolerance = worst_tolerance or None
    return check


def check_merged_files(
    base_files: Sequence[str | Path], merged_files: Sequence[str | Path], adapter: Mapping[str, Tensor],
    settings: LoraSettings, kinds: Mapping[str, str], *, weight: float = 1.0, probes: int = PROBES, seed: int = 0,
) -> MergeCheck:
    """:func:`check_merged_weights` over safetensors files (base shards and the merged ones), reading one
    tensor at a time (never a whole shard)."""
    from safetensors import safe_open

    with contextlib.ExitStack() as stack:
        def reader(files: Sequence[str | Path]) -> Callable[[str], Tensor]:
            where: dict[str, Any] = {}
            for f in files:
                handle = stack.enter_context(safe_open(str(f), framework="pt"))
                where.update(dict.fromkeys(handle.keys(), handle))

            def read(name: str) -> Tensor:
                if name not in where:
                    raise MergeCheckFailed(f"{name}: missing from the files", name)
                return where[name].get_tensor(name)
            return read

        return check_merged_weights(reader(base_files), reader(merged_files), adapter, settings, kinds,
                                    weight=weight, probes=probes, seed=seed)


__all__ = ["EXACT_TYPES", "PROBES", "MergeCheck", "MergeCheckFailed", "check_combination", "check_merged_files",
           "check_merged_weights",
           "dtype_tolerance"]
