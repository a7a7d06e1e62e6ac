"""Quantized base layers from ``bitsandbytes``: recognising them, and reading and writing their weights.

Adapter methods train *around* a frozen base layer; when that layer is a bitsandbytes
``Linear4bit`` (nf4/fp4, optionally with double quantization) or ``Linear8bitLt``, the only
things a method needs from it are here: its logical (out×in) shape, a full-precision copy of
its weight, a way to write a changed weight back (requantizing it), and a guard against the
CPU weight repacking that silently cuts gradients (see :func:`keep_trainable_layout`).

bitsandbytes is never imported by this module: a model can only hold bitsandbytes layers if
the package was imported already, so it is looked up in ``sys.modules``. The SDK works without
bitsandbytes installed.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .merging import add_delta

QuantKind = Literal["4bit", "8bit"]


class QuantizedMergeWarning(UserWarning):
    """Merging into (or unmerging from) a quantized weight rounds it to the quantization grid."""


def _bnb() -> Any | None:
    """The bitsandbytes module if it has been imported, else None (never imports it)."""
    return sys.modules.get("bitsandbytes")


def quantized_kind(module: nn.Module) -> QuantKind | None:
    """``"4bit"`` for ``bnb.nn.Linear4bit``, ``"8bit"`` for ``bnb.nn.Linear8bitLt``, else None."""
    bnb = _bnb()
    if bnb is None or not isinstance(module, nn.Linear):
        return None
    if isinstance(module, bnb.nn.Linear4bit):
        return "4bit"
    if isinstance(module, bnb.nn.Linear8bitLt):
        return "8bit"
    return None


def is_quantized_param(param: Tensor) -> bool:
    """Whether ``param`` is a bitsandbytes quantized weight (``Params4bit`` or ``Int8Params``)."""
    bnb = _bnb()
    return bnb is not None and isinstance(param, (bnb.nn.Params4bit, bnb.nn.Int8Params))


def quantization_label(module: nn.Module) -> str | None:
    """A short name of the storage format: ``"nf4"``, ``"fp4"``, ``"int8"``; None if not quantized."""
    kind = quantized_kind(module)
    if kind == "4bit":
        return str(getattr(module.weight, "quant_type", "fp4"))
    if kind == "8bit":
        return "int8" if module.weight.dtype == torch.int8 else str(module.weight.dtype).removeprefix("torch.")
    return None


def logical_param_shapes(module: nn.Module, params: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes as the full-precision layer has them.

    A 4-bit weight is stored packed (``(out·in/2, 1)`` bytes); signatures and shape checks must
    see ``(out, in)`` so a quantized model and its full-precision original look the same.
    """
    shapes = {name: tuple(p.shape) for name, p in params.items()}
    if quantized_kind(module) is not None and "weight" in shapes:
        shapes["weight"] = (module.out_features, module.in_features)
    return shapes


# --- the CPU repacking trap ----------------------------------------------------------------------


def keep_trainable_layout(module: nn.Module) -> bool:
    """Keep a ``Linear4bit`` in the layout that backpropagates; True if ``module`` is one.

    On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight into an inference-only layout
    the first time the layer runs in eval mode on an input that needs no grad (an eval pass, a
    ``generate`` call). Its matmul then has no backward: gradients stop there without an error.
    This turns that repacking off for ``module`` and undoes it if it already happened.
    """
    if quantized_kind(module) != "4bit":
        return False
    module.support_avx512bf16_for_cpu = False
    _unpack_cpu_layout(module)
    return True


def keep_trainable_layout_everywhere(model: nn.Module) -> int:
    """:func:`keep_trainable_layout` on every 4-bit layer of ``model``; returns how many there are.

    Gradients flow *through* base layers that hold no adapter (to the adapters before them),
    so every 4-bit layer on the way needs the guard, not only the adapted ones.
    """
    return sum(keep_trainable_layout(m) for m in model.modules())


def _unpack_cpu_layout(module: nn.Module) -> None:
    state = getattr(module.weight, "quant_state", None)
    if state is None or not getattr(state, "packing_format_for_cpu", False):
        return
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    data, state = _convert_weight_packed_for_cpu_inverse(module.weight.data, state)
    module.weight.data = data
    module.weight.quant_state = state
    module.quant_state = state


# --- reading and writing the weight --------------------------------------------------------------


def _require(module: nn.Module) -> QuantKind:
    kind = quantized_kind(module)
    if kind is None:
        raise TypeError(f"{type(module).__name__} is not a bitsandbytes Linear4bit or Linear8bitLt layer")
    return kind


def dequantize_weight(module: nn.Module) -> Tensor:
    """A new float32 (out×in) tensor holding the layer's weight as its matmul sees it."""
    kind = _require(module)
    import bitsandbytes as bnb

    weight = module.weight
    if kind == "4bit":
        _unpack_cpu_layout(module)
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
    if weight.dtype != torch.int8:  # has_fp16_weights=True: stored unquantized
        return weight.data.float().clone()
    scb = weight.SCB if getattr(weight, "SCB", None) is not None else module.state.SCB
    if scb is None:
        raise RuntimeError("this Linear8bitLt has int8 weights but no scales (SCB); it was never quantized properly")
    return bnb.functional.int8_vectorwise_dequant(weight.data, scb.to(weight.device)).float()


def requantize_weight(module: nn.Module, weight: Tensor) -> None:
    """Quantize ``weight`` (out×in, any float dtype) into the layer, with its current settings."""
    kind = _require(module)
    import bitsandbytes as bnb

    old = module.weight
    expected = (module.out_features, module.in_features)
    if tuple(weight.shape) != expected:
        raise ValueError(f"weight of shape {tuple(weight.shape)} does not fit a layer of shape {expected}")
    if kind == "4bit":
        _unpack_cpu_layout(module)
        state = old.quant_state
        new = bnb.nn.Params4bit(
            weight.detach().to(device="cpu", dtype=state.dtype),
            requires_grad=False,
            blocksize=old.blocksize,
            compress_statistics=old.compress_statistics,
            quant_type=old.quant_type,
            quant_storage=old.quant_storage,
            module=module,
        )
        module.weight = new.to(old.device)  # quantization happens in .to()
        return
    if old.dtype != torch.int8:
        old.data.copy_(weight.to(old.dtype))
        return
    new = bnb.nn.Int8Params(weight.detach().to("cpu"), requires_grad=False, has_fp16_weights=False)
    module.weight = new.to(old.device)
    module.state.reset_grads()  # the forward re-reads CB/SCB from the new weight


def update_quantized_weight(
    module: nn.Module, deltas: Iterable[tuple[str, Tensor]], *, sign: float = 1.0, safe: bool = False
) -> None:
    """Dequantize, add ``sign·delta`` for each ``(name, delta)``, requantize once, and warn about rounding.

    ``safe=True`` refuses (:class:`~sdk.errors.MergeError`) a result with NaN/Inf before anything
    is written back, so the layer is left as it was.
    """
    pending = list(deltas)
    if not pending:
        return
    weight = dequantize_weight(module)
    for name, delta in pending:
        add_delta(weight, delta, sign=sign, safe=safe, where=f"adapter {name!r}")
    requantize_weight(module, weight)
    action = "merging into" if sign > 0 else "unmerging from"
    warnings.warn(
        f"{action} a {quantization_label(module)} quantized weight rounds it to the quantization grid: outputs "
        "differ slightly from the unmerged model, and unmerging restores the weight only within the quantization "
        "error",
        QuantizedMergeWarning,
        stacklevel=3,
    )
