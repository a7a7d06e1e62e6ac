"""Reading a PEFT LoRA state dict by module: which tensors are whose LoRA factors, and which are not.

PEFT names a module's factors ``<path>.lora_A.weight``/``<path>.lora_B.weight`` (embeddings:
``<path>.lora_embedding_A``/``_B``); any other tensor of an adapter (a ``modules_to_save`` copy,
a trained bias) replaces the base tensor of the same name.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

#: ``(key suffix, factor "a" or "b", whether it is an embedding's)`` of every LoRA factor key.
FACTOR_SUFFIXES = (
    (".lora_A.weight", "a", False), (".lora_B.weight", "b", False),
    (".lora_embedding_A", "a", True), (".lora_embedding_B", "b", True),
)


def group_lora_tensors(
    tensors: Mapping[str, Tensor], prefix: str
) -> tuple[dict[str, dict[str, tuple[Tensor, bool]]], dict[str, Tensor]]:
    """``(factors, other)`` of a LoRA state dict whose keys start with ``prefix`` (removed).

    ``factors[path]`` maps ``"a"``/``"b"`` to ``(tensor, is_embedding)`` for the factors found
    (a partner may be missing: callers say how that is wrong); ``other`` holds every other tensor
    under its key. Both keep the order of ``tensors``.
    """
    factors: dict[str, dict[str, tuple[Tensor, bool]]] = {}
    other: dict[str, Tensor] = {}
    for key, tensor in tensors.items():
        path = key.removeprefix(prefix)
        for suffix, role, embedding in FACTOR_SUFFIXES:
            if path.endswith(suffix):
                factors.setdefault(path[: -len(suffix)], {})[role] = (tensor, embedding)
                break
        else:
            other[path] = tensor
    return factors, other


__all__ = ["FACTOR_SUFFIXES", "group_lora_tensors"]
