"""LoRA's weight change ΔW: its scale, its layout in the base weight, adding it to a weight or a state dict.

Nothing here touches modules: functions take and return tensors or state dicts, so the SDK's
layers and the registry's server-side merge jobs share one copy of the math.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import Tensor

from ..errors import MergeError
from .lora_keys import group_lora_tensors

LayerKind = Literal["linear", "conv1d", "embedding", "conv2d"]


def lora_scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """LoRA's output scale: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def lora_delta(a: Tensor, b: Tensor, scaling: float, kind: LayerKind) -> Tensor:
    """ΔW in the base weight's own layout for LoRA factors ``a`` (r×in…) and ``b`` (out×r…).

    - linear: ``B·A·s`` (out×in)
    - conv1d (transformers' GPT-2 layer, weight in×out): ``(B·A·s)ᵀ``
    - embedding (A r×vocab, B dim×r, weight vocab×dim): ``(B·A·s)ᵀ``
    - conv2d (A r×in×kh×kw, B out×r×1×1): ``Σ_r B[o,r]·A[r,i,h,w]·s``
    """
    if kind == "conv2d":
        return torch.einsum("or,rihw->oihw", b.flatten(1), a) * scaling
    delta = (b @ a) * scaling
    if kind in ("conv1d", "embedding"):
        return delta.T
    return delta


def add_delta(weight: Tensor, delta: Tensor, *, sign: float = 1.0, safe: bool = False, where: str = "") -> None:
    """Add ``sign·delta`` to ``weight`` in place (in the weight's dtype).

    With ``safe=True`` the sum is computed out of place first and refused when it holds NaN or
    Inf, leaving ``weight`` untouched.
    """
    delta = delta.to(weight.dtype)
    if safe:
        merged = weight.detach() + sign * delta
        if not torch.isfinite(merged).all():
            raise MergeError(
                f"merging {where or 'the adapter'} gives NaN/Inf values; the weights were left as they were"
            )
        weight.data.copy_(merged)
    else:
        weight.data.add_(delta, alpha=sign)


def merge_lora_state_dict(
    base: Mapping[str, Tensor],
    adapter: Mapping[str, Tensor],
    scaling_for: Callable[[str, int], float],
    *,
    kinds: Mapping[str, LayerKind] | None = None,
    weight: float = 1.0,
) -> dict[str, Tensor]:
    """Merge a PEFT-format LoRA state dict into a base model state dict, returning a new dict.

    ``adapter`` keys are PEFT's on-disk keys (``base_model.model.<path>.lora_A.weight`` …);
    ``base`` keys are the model's own (``<path>.weight``). ``scaling_for(path, r)`` gives the
    scale of the module at ``path``; ``kinds`` the layer kind of each path (from the base
    model's signature). Without it the kind is read off the shapes, and a square weight whose
    layout (Linear out×in or Conv1D in×out) cannot be told apart is an error rather than a
    guess. Tensors in ``base`` that are not touched are shared, not copied.
    """
    out = dict(base)
    pairs, other = group_lora_tensors(adapter, "base_model.model.")
    for path, tensor in other.items():
        if path in out:  # modules_to_save copies and trained biases replace the base tensor
            out[path] = tensor
    for path, t in pairs.items():
        wkey = f"{path}.base_layer.weight" if f"{path}.base_layer.weight" in out else f"{path}.weight"
        if wkey not in out:
            raise MergeError(f"adapter module {path!r} has no weight {wkey!r} in the base state dict")
        w = out[wkey]
        (a, embedding), (b, _) = t["a"], t["b"]
        kind: LayerKind = "embedding" if embedding else (kinds or {}).get(path) or _kind_from_shapes(path, a, b, w)
        delta = lora_delta(a.float(), b.float(), scaling_for(path, a.shape[0]) * weight, kind)
        if delta.shape != w.shape:
            raise MergeError(f"ΔW for {path!r} has shape {tuple(delta.shape)}, base weight has {tuple(w.shape)}")
        out[wkey] = (w.float() + delta).to(w.dtype)
    return out


def _kind_from_shapes(path: str, a: Tensor, b: Tensor, w: Tensor) -> LayerKind:
    if a.ndim == 4:
        return "conv2d"
    out_f, in_f = b.shape[0], a.shape[1]
    if out_f == in_f:
        raise MergeError(
            f"cannot tell whether {path!r} (square {out_f}×{in_f}) is a Linear or a transposed Conv1D weight; "
            "pass kinds={path: 'linear' | 'conv1d'} (the base model signature has them)"
        )
    if tuple(w.shape) == (out_f, in_f):
        return "linear"
    if tuple(w.shape) == (in_f, out_f):
        return "conv1d"
    raise MergeError(f"LoRA factors of {path!r} (in {in_f}, out {out_f}) do not fit base weight {tuple(w.shape)}")
