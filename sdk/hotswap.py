"""Hot-swapping LoRA adapters in a compiled model, without recompiling it.

A serving process compiles its model once and then replaces an adapter's weights in place:

1. load the first adapter, then call :func:`prepare_model_for_compiled_hotswap` *before* compiling:
   it pads every LoRA factor to ``target_rank`` (zero rows of A, zero columns of B, so outputs stay
   the same) and turns each scaling (``alpha/r``) into a 0-d tensor, so that a compiled graph reads
   ranks and scalings as tensor shapes and inputs, not as constants it would specialise on;
2. compile the model;
3. :func:`hotswap_adapter` copies another adapter's factors into those tensors (zeros beyond its
   rank, zeros on modules it does not target) and fills in its scalings. The parameters stay the same
   objects with the same shapes, so the compiled graph keeps serving.

An adapter that targets a module the loaded one does not, or that has a larger rank than the model
was prepared for, cannot be swapped in without a recompile: it is refused with a message that says
what to prepare for, before anything is changed. The same rules as PEFT's
``prepare_model_for_compiled_hotswap`` / ``hotswap_adapter``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from .errors import AdapterStateError, FormatError
from .formats import read_adapter_weights, read_config
from .layers import iter_adapter_modules
from .methods import config_from_dict, get_method
from .model import AdapterModel
from .tuners.lora import LoraConfig
from .tuners.lora.dora import row_norm, weight_out_in
from .tuners.lora.layers import LoraLayer

#: Where a LoRA factor's rank is: dimension 0 of A (r×in…), dimension 1 of B (out×r…).
RANK_DIM = {"A": 0, "B": 1}


def _unwrap(model: nn.Module) -> AdapterModel:
    inner = getattr(model, "_orig_mod", model)  # torch.compile(model) returns a wrapper
    if not isinstance(inner, AdapterModel):
        raise TypeError(f"expected an sdk.AdapterModel (or torch.compile of one), got {type(inner).__name__}")
    return inner


def _is_compiled(model: nn.Module) -> bool:
    return hasattr(model, "_orig_mod") or getattr(model, "_compiled_call_impl", None) is not None


def _lora_layers(model: AdapterModel, adapter_name: str | None = None) -> list[tuple[str, LoraLayer]]:
    return [(path, m) for path, m in iter_adapter_modules(model.base_model)
            if isinstance(m, LoraLayer) and (adapter_name is None or adapter_name in m.adapter_names())]


def _padded(t: Tensor, dim: int, width: int) -> Tensor:
    shape = list(t.shape)
    shape[dim] = width
    out = torch.zeros(shape, dtype=t.dtype, device=t.device)
    out.narrow(dim, 0, t.shape[dim]).copy_(t)
    return out


def prepare_model_for_compiled_hotswap(
    model: nn.Module,
    *,
    target_rank: int | None = None,
    check_compiled: Literal["error", "warn", "ignore"] = "error",
) -> None:
    """Make the loaded LoRA adapters swappable in a compiled model; call it after loading, before compiling.

    ``target_rank``: the largest rank of any adapter you will swap in (every factor is zero-padded to
    it; None keeps the ranks, so only adapters of the same or smaller rank fit). Scalings become
    tensors in any case, so adapters with another alpha swap in without a recompile. The adapters' saved
    form does not change: ``save_pretrained`` writes them at their own rank.
    """
    if check_compiled not in ("error", "warn", "ignore"):
        raise ValueError(f"check_compiled must be 'error', 'warn' or 'ignore', got {check_compiled!r}")
    if _is_compiled(model):
        message = ("prepare_model_for_compiled_hotswap() was called on a compiled model: call it before "
                   "torch.compile, or the padded shapes and tensor scalings force a recompile")
        if check_compiled == "error":
            raise AdapterStateError(message)
        if check_compiled == "warn":
            warnings.warn(message, UserWarning, stacklevel=2)
    inner = _unwrap(model)
    layers = _lora_layers(inner)
    if not layers:
        raise AdapterStateError("the model has no LoRA adapter to prepare; load the first adapter, then prepare, "
                                "then compile")
    if target_rank is not None:
        if not isinstance(target_rank, int) or target_rank < 1:
            raise ValueError(f"target_rank must be a positive integer, got {target_rank!r}")
        too_big = [f"{path} ({name}: r={layer.lora_A[name].shape[0]})" for path, layer in layers
                   for name in layer.adapter_names() if layer.lora_A[name].shape[0] > target_rank]
        if too_big:
            raise AdapterStateError(f"target_rank={target_rank} is smaller than the rank already loaded on "
                                    f"{', '.join(too_big[:5])}; pass at least the largest rank")
    for _, layer in layers:
        for name in layer.adapter_names():
            scale = layer.scaling[name]
            if not isinstance(scale, Tensor):
                layer.scaling[name] = torch.tensor(float(scale), dtype=torch.float32,
                                                   device=layer.lora_A[name].device)
            if target_rank is None or layer.lora_A[name].shape[0] == target_rank:
                continue
            for store, dim in ((layer.lora_A, RANK_DIM["A"]), (layer.lora_B, RANK_DIM["B"])):
                old = store[name]
                store[name] = nn.Parameter(_padded(old.detach(), dim, target_rank), requires_grad=old.requires_grad)
        layer._mix_cache.clear()


@dataclass
class _Swap:
    """What one LoRA layer receives: the new factors (None: zeros, the adapter skips this module)."""

    path: str
    layer: LoraLayer
    a: Tensor | None
    b: Tensor | None
    magnitude: Tensor | None
    scaling: float
    rank: int


def hotswap_adapter(model: nn.Module, source: str | Path, adapter_name: str = "default") -> None:
    """Replace adapter ``adapter_name``'s weights with those of the saved LoRA adapter in folder ``source``.

    ``source`` is a folder in PEFT's format, e.g. ``sdk.pull("alice/chat@3")`` (the registry cache). The
    adapter keeps its name; nothing is changed when the new adapter does not fit (see the module doc).
    """
    folder = Path(source)
    config = config_from_dict(read_config(folder))
    hotswap_adapter_from_state_dict(model, read_adapter_weights(folder), config, adapter_name, source=str(folder))


def hotswap_adapter_from_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    config: LoraConfig,
    adapter_name: str = "default",
    *,
    source: str = "the new adapter",
) -> None:
    """:func:`hotswap_adapter` from tensors under their on-disk keys and the adapter's config."""
    inner = _unwrap(model)
    if adapter_name not in inner.peft_config:
        raise AdapterStateError(f"the model has no adapter {adapter_name!r} to swap; it has {inner.adapter_names}")
    old = inner.peft_config[adapter_name]
    for label, cfg in (("the model's adapter " + repr(adapter_name), old), (source, config)):
        if not isinstance(cfg, LoraConfig):
            raise AdapterStateError(f"hot-swapping works for LoRA adapters; {label} is {cfg.peft_type}")
    if config.use_dora != old.use_dora:
        raise AdapterStateError(f"{source} has use_dora={config.use_dora} but adapter {adapter_name!r} has "
                                f"use_dora={old.use_dora}; both must be the same to swap without recompiling")
    if config.bias != "none" or config.modules_to_save:
        raise AdapterStateError(f"{source} also trains biases or full modules (bias={config.bias!r}, "
                                f"modules_to_save={config.modules_to_save}); hot-swapping replaces LoRA factors "
                                "only: load it with load_adapter() instead")
    if adapter_name in inner._merged_names():
        raise AdapterStateError(f"adapter {adapter_name!r} is merged into the base weights; call unmerge_adapter() "
                                "before swapping it")
    swaps = _plan(inner, adapter_name, state_dict, config, source)
    with torch.no_grad():
        for s in swaps:
            _apply(s, adapter_name)
    inner.peft_config[adapter_name] = _config_after(config, old, swaps, adapter_name)


def _config_after(config: LoraConfig, old: LoraConfig, swaps: list[_Swap], name: str) -> LoraConfig:
    """The swapped-in adapter's config; when it skips modules the model holds (zeros now), one that also
    names those, at their rank, so that ``save_pretrained`` writes a folder that loads again."""
    changes: dict[str, object] = {"inference_mode": old.inference_mode}
    skipped = {s.path: s.layer.r[name] for s in swaps if s.a is None}
    if skipped:
        changes.update(
            target_modules=sorted(s.path for s in swaps), exclude_modules=None, layers_to_transform=None,
            layers_pattern=None, rank_pattern={**{re.escape(p): r for p, r in skipped.items()}, **config.rank_pattern},
        )
    new = config.copy(**changes)
    new.extra = dict(config.extra)
    return new


def _plan(model: AdapterModel, name: str, state_dict: Mapping[str, Tensor], config: LoraConfig, source: str
          ) -> list[_Swap]:
    """Match every tensor of the new adapter to a layer of ``name``, or raise listing every problem."""
    prefix = get_method("LORA").tuner.disk_prefix
    given = {k.removeprefix(prefix): t for k, t in state_dict.items()}
    layers = dict(_lora_layers(model, name))
    used: set[str] = set()
    swaps: list[_Swap] = []
    wider: dict[str, tuple[int, int]] = {}
    problems: list[str] = []
    for path, layer in layers.items():
        a_key, b_key = (f"{path}.{k}" for k in layer.disk_names)
        m_key = f"{path}.lora_magnitude_vector"
        a, b, magnitude = given.get(a_key), given.get(b_key), given.get(m_key)
        used.update(k for k in (a_key, b_key, m_key) if k in given)
        if a is None and b is None:
            swaps.append(_Swap(path, layer, None, None, None, 0.0, 0))
            continue
        if a is None or b is None:
            problems.append(f"{path}: the file has only one of {layer.disk_names}")
            continue
        have_a, have_b = layer.lora_A[name], layer.lora_B[name]
        rank = a.shape[0]
        if a.dim() != have_a.dim() or b.dim() != have_b.dim() or b.shape[1] != rank:
            problems.append(f"{path}: factors of shapes {tuple(a.shape)}, {tuple(b.shape)} do not fit a "
                            f"{type(layer.base_layer).__name__} layer")
            continue
        if a.shape[1:] != have_a.shape[1:] or (b.shape[0], *b.shape[2:]) != (have_b.shape[0], *have_b.shape[2:]):
            problems.append(f"{path}: factors of shapes {tuple(a.shape)}, {tuple(b.shape)} do not fit this "
                            f"module (A {tuple(have_a.shape)}, B {tuple(have_b.shape)} loaded)")
            continue
        if rank != config.rank_for(path):
            problems.append(f"{path}: rank {rank} in the file but r={config.rank_for(path)} in its config")
            continue
        if rank > have_a.shape[0]:
            wider[path] = (rank, have_a.shape[0])
            continue
        if config.use_dora and (magnitude is None or magnitude.shape != layer.lora_magnitude_vector[name].shape):
            problems.append(f"{path}: DoRA magnitude vector missing or of the wrong shape")
            continue
        for t in (a, b) + ((magnitude,) if magnitude is not None else ()):
            if not t.is_floating_point():
                problems.append(f"{path}: dtype {t.dtype} is not a floating point type")
        swaps.append(_Swap(path, layer, a, b, magnitude, config.scaling_for(path, rank), rank))
    extra = sorted(set(given) - used)
    if extra:
        modules = sorted({k.rsplit(".", 2 if k.endswith(".weight") else 1)[0] for k in extra})
        targeted = sorted(layers)
        problems.append(
            f"{source} targets modules where adapter {name!r} has no LoRA layer: {', '.join(modules[:8])}"
            f"{' …' if len(modules) > 8 else ''}. A swap cannot add layers to a compiled model: load first (before "
            f"compiling) an adapter that targets every module you will swap in (this model's covers "
            f"{len(targeted)} modules), or load this one with load_adapter() and compile again"
        )
    if wider:
        need = max(r for r, _ in wider.values())
        shown = ", ".join(f"{p} (rank {r} > {w})" for p, (r, w) in list(wider.items())[:4])
        problems.append(
            f"{source} has a larger rank than the model holds: {shown}. Prepare the model for it before compiling: "
            f"sdk.prepare_model_for_compiled_hotswap(model, target_rank={need})"
        )
    if problems:
        raise FormatError(f"cannot hot-swap {source} into adapter {name!r}:\n  " + "\n  ".join(problems))
    return swaps


def _apply(s: _Swap, name: str) -> None:
    """Copy one layer's new factors in place (zeros beyond the rank), its magnitude and its scaling."""
    layer = s.layer
    have_a, have_b = layer.lora_A[name], layer.lora_B[name]
    have_a.zero_()
    have_b.zero_()
    if s.a is not None and s.b is not None:
        have_a.narrow(0, 0, s.rank).copy_(s.a.to(device=have_a.device, dtype=have_a.dtype))
        have_b.narrow(1, 0, s.rank).copy_(s.b.to(device=have_b.device, dtype=have_b.dtype))
    if name in layer.lora_magnitude_vector:
        magnitude = layer.lora_magnitude_vector[name]
        if s.magnitude is not None:
            magnitude.copy_(s.magnitude.to(device=magnitude.device, dtype=magnitude.dtype))
        else:  # no adapter here: m = ‖W‖ makes DoRA's rescaling exactly 1
            magnitude.copy_(row_norm(weight_out_in(layer).to(magnitude.dtype)))
    if s.a is not None:
        scale = layer.scaling[name]
        if isinstance(scale, Tensor):
            scale.fill_(s.scaling)
        else:
            layer.scaling[name] = s.scaling
        layer.r[name] = s.rank
    layer._mix_cache.clear()
