"""Which modules a config selects: names, suffixes, full-match regexes, ``all-linear``, layers.

The rules follow PEFT's so that an ``adapter_config.json`` selects the same modules here as
there. When nothing matches, the error shows the closest module names.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from .errors import TargetModulesNotFoundError

ALL_LINEAR = "all-linear"

#: Default ``target_modules`` by ``model.config.model_type`` when a config leaves them unset.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "mixtral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
    "phi": ["q_proj", "v_proj", "fc1", "fc2"],
    "opt": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "gptj": ["q_proj", "v_proj"],
    "bloom": ["query_key_value"],
    "falcon": ["query_key_value"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "t5": ["q", "v"],
    "bart": ["q_proj", "v_proj"],
}

#: Names of classification heads that tasks train in full (PEFT adds them to modules_to_save).
SEQ_CLS_HEADS = ("classifier", "score")


LINEAR_KINDS = frozenset({"Linear", "Conv1D"})


def linear_classes() -> tuple[type, ...]:
    """Layer classes counted as linear: ``nn.Linear`` and transformers' ``Conv1D`` if installed."""
    classes: list[type] = [nn.Linear]
    try:
        from transformers.pytorch_utils import Conv1D

        classes.append(Conv1D)
    except ImportError:  # transformers is optional
        pass
    return tuple(classes)


def module_kind(module: nn.Module) -> str:
    """``Linear``, ``Conv1D``, ``Embedding``, ``Conv2d``, or the class name of anything else."""
    lin = linear_classes()
    if isinstance(module, nn.Linear):
        return "Linear"
    if len(lin) > 1 and isinstance(module, lin[1]):
        return "Conv1D"
    if isinstance(module, nn.Embedding):
        return "Embedding"
    if isinstance(module, nn.Conv2d):
        return "Conv2d"
    return type(module).__name__


@dataclass(frozen=True)
class ModelView:
    """What targeting needs to know of a model: module paths with kinds, type, output head.

    Built from a live model (:func:`sdk.layers.model_view`) or from a registered base-model
    signature, so a config selects the same modules on both sides.
    """

    kinds: dict[str, str]
    model_type: str | None = None
    output_heads: frozenset[str] = frozenset()


def resolve_target_modules(
    view: ModelView, target_modules: str | Sequence[str] | None, *, task_type: str | None = None
) -> str | list[str]:
    """Turn ``None`` (architecture default) and ``"all-linear"`` into concrete name lists."""
    if target_modules is None:
        if view.model_type in DEFAULT_TARGETS:
            return list(DEFAULT_TARGETS[view.model_type])
        raise TargetModulesNotFoundError(
            "target_modules is not set and there is no default for "
            f"model_type={view.model_type!r}; pass target_modules=[...] (module names such as 'q_proj'), "
            "a full-match regex, or 'all-linear'"
        )
    if isinstance(target_modules, str) and target_modules.lower() == ALL_LINEAR:
        excluded = set(view.output_heads)
        if task_type == "SEQ_CLS":
            excluded |= {n for n in view.kinds if n in SEQ_CLS_HEADS}
        leafs = {n.rsplit(".", 1)[-1] for n, k in view.kinds.items() if k in LINEAR_KINDS and n not in excluded}
        for n in excluded:
            leafs.discard(n.rsplit(".", 1)[-1])
        return sorted(leafs)
    if isinstance(target_modules, str):
        return target_modules
    return list(target_modules)


def matches_name_list(key: str, names: Iterable[str]) -> bool:
    """``key`` equals one of ``names`` or ends with ``.name``."""
    return any(key == n or key.endswith("." + n) for n in names)


def pattern_key(patterns: Iterable[str], key: str) -> str | None:
    """The first ``rank_pattern``/``alpha_pattern`` key matching module path ``key``."""
    for p in patterns:
        if re.match(rf"(.*\.)?({p})$", key):
            return p
    return None


def _layer_index(key: str, layers_pattern: str | Sequence[str] | None) -> int | None:
    if not layers_pattern:
        m = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    else:
        patterns = [layers_pattern] if isinstance(layers_pattern, str) else list(layers_pattern)
        m = None
        for pat in patterns:
            m = re.match(rf"(?:^|.*?\.){pat}\.(?P<idx>\d+)\.", key)
            if m:
                break
    return int(m.group("idx")) if m else None


def is_target(
    key: str,
    target_modules: str | Sequence[str],
    *,
    exclude_modules: str | Sequence[str] | None = None,
    layers_to_transform: int | Sequence[int] | None = None,
    layers_pattern: str | Sequence[str] | None = None,
    modules_to_save: Sequence[str] | None = None,
) -> bool:
    """Whether module path ``key`` is selected (PEFT's matching rules)."""
    if exclude_modules:
        if isinstance(exclude_modules, str):
            if re.fullmatch(exclude_modules, key):
                return False
        elif matches_name_list(key, exclude_modules):
            return False
    if modules_to_save and any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", key) for m in modules_to_save):
        return False
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, key) is not None
    if key in target_modules:
        return True
    if not any(key.endswith("." + t) for t in target_modules):
        return False
    using_layers = layers_to_transform is not None and (
        not isinstance(layers_to_transform, Sequence) or len(layers_to_transform) > 0
    )
    if not using_layers:
        return True
    idx = _layer_index(key, layers_pattern)
    if idx is None:
        return False
    if isinstance(layers_to_transform, int):
        return idx == layers_to_transform
    return idx in layers_to_transform


def not_found_message(view: ModelView, target_modules: str | Sequence[str], extra: str = "") -> str:
    """Error text for a selection that matched nothing, with the closest module names."""
    leafs = sorted({n.rsplit(".", 1)[-1] for n in view.kinds})
    wanted = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    hints: list[str] = []
    for w in wanted:
        close = difflib.get_close_matches(w.rsplit(".", 1)[-1], leafs, n=3, cutoff=0.5)
        if close:
            hints.append(f"{w!r} -> did you mean {', '.join(repr(c) for c in close)}?")
    linear_leafs = sorted({n.rsplit(".", 1)[-1] for n, k in view.kinds.items() if k in LINEAR_KINDS})
    msg = f"Target modules {sorted(wanted)} not found in the base model{extra}."
    if hints:
        msg += " " + " ".join(hints)
    msg += f" Linear layers in this model are named: {linear_leafs[:20]}"
    if len(linear_leafs) > 20:
        msg += f" (+{len(linear_leafs) - 20} more)"
    msg += ". Pass those names (or suffixes), a full-match regex, or 'all-linear'."
    return msg
