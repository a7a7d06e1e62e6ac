"""PEFT's on-disk adapter format: key naming, adapter-name stripping, safetensors files.

A saved adapter is a folder with ``adapter_config.json`` and ``adapter_model.safetensors``
whose keys are ``base_model.model.<module path>.<suffix>`` with no adapter name in them.
Pickle checkpoints are refused: this module never unpickles anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import CONFIG_NAME, AdapterConfig
from .errors import FormatError, PickleRefusedError
from .layers import iter_adapter_modules
from .methods import Tuner
from .modules_to_save import ModulesToSave

WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "pytorch_model.bin")
PREFIX = "base_model.model."


def adapter_state_dict(model: nn.Module, adapter_name: str, config: AdapterConfig, tuner: Tuner) -> dict[str, Tensor]:
    """The adapter's tensors under their on-disk keys (live tensors, not copies)."""
    prefix = tuner.disk_prefix
    out: dict[str, Tensor] = {}
    for path, module in iter_adapter_modules(model):
        if adapter_name not in module.adapter_names():
            continue
        for suffix, tensor in module.adapter_tensors(adapter_name).items():
            out[suffix if module.top_level_keys else f"{prefix}{path}.{suffix}"] = tensor
    for key, tensor in tuner.extra_state(model, config, adapter_name).items():
        out[prefix + key] = tensor
    return out


def save_adapter(directory: str | Path, config: AdapterConfig, tensors: Mapping[str, Tensor]) -> Path:
    """Write ``adapter_config.json``, ``adapter_model.safetensors`` and a model card into ``directory``."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    plain = {k: t.detach().contiguous().clone() for k, t in tensors.items()}
    save_file(plain, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    config.save(path)
    card = path / "README.md"
    if not card.exists():
        card.write_text(_model_card(config, plain), encoding="utf-8")
    return path


def _model_card(config: AdapterConfig, tensors: Mapping[str, Tensor]) -> str:
    n = sum(t.numel() for t in tensors.values())
    base = config.base_model_name_or_path or "unknown"
    return (
        "---\n"
        f"base_model: {base}\nlibrary_name: peft\ntags:\n- {config.peft_type.lower()}\n"
        "---\n\n"
        f"# {config.peft_type} adapter\n\n"
        f"Base model: `{base}`. Parameters: {n:,}. Saved in PEFT's format "
        "(`adapter_config.json` + `adapter_model.safetensors`).\n"
    )


def read_adapter_weights(directory: str | Path) -> dict[str, Tensor]:
    """Load ``adapter_model.safetensors`` from ``directory`` (never a pickle file)."""
    path = Path(directory)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        pickles = [p for p in PICKLE_NAMES if (path / p).is_file()]
        if pickles:
            raise PickleRefusedError(
                f"{path / pickles[0]} is a pickle checkpoint, which can run arbitrary code when loaded, so this "
                "SDK never reads it. Convert it once in a trusted environment, e.g. "
                "`peft.PeftModel.from_pretrained(base, dir).save_pretrained(out, safe_serialization=True)`, "
                "or `safetensors.torch.save_file(torch.load(path, weights_only=True), "
                "'adapter_model.safetensors', metadata={'format': 'pt'})`."
            )
        raise FormatError(f"no {WEIGHTS_NAME} in {path}")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FormatError(f"{weights} is not a readable safetensors file: {exc}") from exc


def read_config(directory: str | Path) -> dict[str, object]:
    """Parsed ``adapter_config.json`` of ``directory``."""
    from .config import read_config_dict

    return read_config_dict(directory)


def _normalise_keys(model: nn.Module, given: dict[str, Tensor]) -> dict[str, Tensor]:
    """Undo PEFT quirks: with ``bias="all"`` it also saves ``<P>.modules_to_save.bias`` (a duplicate
    of ``<P>.bias``) and ``<P>.original_module.bias`` (the base bias) of full-copy modules."""
    wrappers = {path for path, m in iter_adapter_modules(model) if isinstance(m, ModulesToSave)}
    out: dict[str, Tensor] = {}
    for key, tensor in given.items():
        for path in wrappers:
            head = f"{path}.modules_to_save."
            if key.startswith(head) and f"{path}.{key[len(head):]}" in given:
                break
            head = f"{path}.original_module."
            if key.startswith(head):
                out[f"{path}.base_layer.{key[len(head):]}"] = tensor
                break
        else:
            out[key] = tensor
    return out


def load_adapter_state(
    model: nn.Module, adapter_name: str, config: AdapterConfig, tuner: Tuner, tensors: Mapping[str, Tensor]
) -> None:
    """Copy on-disk ``tensors`` into the injected adapter ``adapter_name``, strictly.

    Every expected tensor must be present with its exact shape, and every file tensor must
    land somewhere; otherwise :class:`FormatError` lists the problems and nothing is copied.
    """
    for _, module in iter_adapter_modules(model):
        if adapter_name in module.adapter_names():
            module.prepare_load(adapter_name)
    prefix = tuner.disk_prefix
    expected = {k.removeprefix(prefix): t for k, t in adapter_state_dict(model, adapter_name, config, tuner).items()}
    given = _normalise_keys(model, {k.removeprefix(prefix): t for k, t in tensors.items()})
    params = dict(model.named_parameters(remove_duplicate=False))  # tied weights under every name
    problems: list[str] = []
    base_overrides: dict[str, Tensor] = {}
    for key, tensor in given.items():
        if key in expected:
            want = tuple(expected[key].shape)
            if tuple(tensor.shape) != want:
                problems.append(f"{key}: shape {tuple(tensor.shape)} in the file, the model expects {want}")
            elif not tensor.is_floating_point():
                problems.append(f"{key}: dtype {tensor.dtype} is not a floating point type")
        elif key in params and tuple(params[key].shape) == tuple(tensor.shape):
            # PEFT may save base layers (embeddings it could have resized); identical ones are no-ops
            if not torch.equal(params[key].detach().cpu(), tensor.to(params[key].dtype).cpu()):
                base_overrides[key] = tensor
        else:
            problems.append(f"{key}: in the file but matches no module of this model and adapter config")
    missing = sorted(set(expected) - set(given))
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        problems.append(f"missing from the file: {shown}")
    if problems:
        raise FormatError(
            f"adapter weights do not fit the model for adapter {adapter_name!r}:\n  " + "\n  ".join(problems)
        )
    if base_overrides:
        warnings.warn(
            f"the adapter file replaces base model parameters {sorted(base_overrides)}", UserWarning, stacklevel=3
        )
    with torch.no_grad():
        for key, tensor in given.items():
            target = expected.get(key)
            if target is None:
                if key not in base_overrides:
                    continue
                target = params[key]
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))


__all__ = [
    "CONFIG_NAME",
    "PICKLE_NAMES",
    "PREFIX",
    "WEIGHTS_NAME",
    "adapter_state_dict",
    "load_adapter_state",
    "read_adapter_weights",
    "read_config",
    "save_adapter",
]
