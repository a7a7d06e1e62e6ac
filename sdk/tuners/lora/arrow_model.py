"""``create_arrow_model``: load a library of LoRA experts into a model and route over them with Arrow.

As PEFT: expert ``i`` becomes adapter ``task_<i>``, general adapter ``j`` becomes ``gks_<j>`` (loaded only
with ``use_gks``), every adapter must be LoRA with one rank and the same adapted modules and shapes, and
an ``arrow_router`` LoRA adapter carrying the config is added and made active. Paths are local folders or
registry references ``ns/name[@ref]`` (pulled through the registry client); Hub ids are not fetched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ...config import CONFIG_NAME
from ...errors import ConfigError
from ...layers import iter_adapter_modules
from .arrow import GKS_PREFIX, ROUTER_NAME, TASK_PREFIX, ArrowConfig, ArrowRouter
from .config import LoraConfig
from .layers import LoraLayer

if TYPE_CHECKING:
    from ...client import Client
    from ...model import AdapterModel

#: At most this many experts (task plus general) in one Arrow model.
MAX_EXPERTS = 256


def resolve_adapter_path(path: str | os.PathLike[str], client: Client | None = None) -> Path:
    """A local adapter folder for ``path``: the folder itself, or a registry reference pulled into the cache."""
    local = Path(path)
    if local.is_dir():
        if not (local / CONFIG_NAME).is_file():
            raise ConfigError(f"local adapter path {str(local)!r} has no {CONFIG_NAME}")
        return local
    text = os.fspath(path)
    if text.count("/") != 1:
        raise ConfigError(f"{text!r} is neither a local adapter folder nor a registry reference 'ns/name[@ref]'")
    if client is None:
        from ... import default_client

        client = default_client()
    return client.pull(text)


def create_arrow_model(
    base_model: nn.Module,
    task_specific_adapter_paths: Sequence[str | os.PathLike[str]],
    arrow_config: ArrowConfig,
    general_adapter_paths: Sequence[str | os.PathLike[str]] | None = None,
    *,
    client: Client | None = None,
    prototypes: Mapping[str, Tensor] | None = None,
) -> AdapterModel:
    """An ``AdapterModel`` around ``base_model`` (changed in place) whose active ``arrow_router`` routes
    each token over the task experts. ``prototypes`` (``layer path -> (E, in)``, after GKS, in expert
    order) skips computing them, as when a registry composition supplies them."""
    from ...model import AdapterModel

    if not isinstance(arrow_config, ArrowConfig):
        raise ConfigError(f"arrow_config must be an sdk.ArrowConfig, got {type(arrow_config).__name__}")
    tasks = list(task_specific_adapter_paths or [])
    general = list(general_adapter_paths or [])
    if not tasks:
        raise ConfigError("task_specific_adapter_paths should contain at least one adapter path")
    if arrow_config.use_gks and not general:
        raise ConfigError("use_gks=True needs general_adapter_paths (the general adapters to subtract)")
    if len(tasks) + len(general) > MAX_EXPERTS:
        raise ConfigError(f"at most {MAX_EXPERTS} adapters in one Arrow model, got {len(tasks) + len(general)}")
    if arrow_config.top_k > len(tasks):
        raise ConfigError(f"top_k={arrow_config.top_k} is more than the {len(tasks)} task experts")
    folders = [resolve_adapter_path(p, client) for p in tasks]
    gks_folders = [resolve_adapter_path(p, client) for p in general] if arrow_config.use_gks else []
    task_names = [f"{TASK_PREFIX}{i}" for i in range(len(folders))]
    gks_names = [f"{GKS_PREFIX}{i}" for i in range(len(gks_folders))]

    model = AdapterModel.from_pretrained(base_model, folders[0], adapter_name=task_names[0])
    try:
        for name, folder in zip(task_names[1:] + gks_names, folders[1:] + gks_folders, strict=True):
            model.load_adapter(folder, name)
        paths, rank = _check_library(model, task_names + gks_names)
        config = ArrowConfig(arrow_config.top_k, arrow_config.router_temperature, arrow_config.use_gks,
                             arrow_config.rng_seed)
        config.task_adapter_names, config.gks_adapter_names = task_names, gks_names
        arrow_config.task_adapter_names, arrow_config.gks_adapter_names = task_names, gks_names  # as PEFT
        router = LoraConfig(r=rank, target_modules=_exact_paths(paths), arrow_config=config.to_dict(),
                            inference_mode=True)
        model.add_adapter(ROUTER_NAME, router)
        model.set_adapter(ROUTER_NAME)
        if prototypes is not None:
            give_prototypes(model, prototypes)
    except BaseException:
        model.unload()
        raise
    model.eval()
    return model


def routers(model: nn.Module) -> dict[str, ArrowRouter]:
    """Every Arrow router of ``model`` by its layer's path in the base model."""
    return {path: mod.lora_arrow[ROUTER_NAME] for path, mod in iter_adapter_modules(_base(model))
            if isinstance(mod, LoraLayer) and ROUTER_NAME in (mod._modules.get("lora_arrow") or {})}


def give_prototypes(model: nn.Module, prototypes: Mapping[str, Tensor]) -> None:
    """Hand each layer's router its stored prototypes (``path -> (E, in)``, in expert order)."""
    found = routers(model)
    missing = sorted(set(found) - set(prototypes))
    extra = sorted(set(prototypes) - set(found))
    if missing or extra:
        raise ConfigError(f"stored Arrow prototypes do not fit the model: missing {missing[:3]}, extra {extra[:3]}")
    for path, router in found.items():
        layer = _layer(model, path)
        protos = prototypes[path]
        if protos.shape != (len(router.experts), layer.in_features):
            raise ConfigError(f"stored Arrow prototypes for {path} have shape {tuple(protos.shape)}, "
                              f"expected {(len(router.experts), layer.in_features)}")
        router.give_prototypes(dict(zip(router.experts, protos, strict=True)))


def current_prototypes(model: nn.Module) -> dict[str, Tensor]:
    """Each layer's prototypes ``path -> (E, in)`` (built now if needed)."""
    out: dict[str, Tensor] = {}
    for path, router in routers(model).items():
        router.prepare(_layer(model, path))
        out[path] = router.prototypes
    return out


def _base(model: nn.Module) -> nn.Module:
    from ...model import AdapterModel

    return model.get_base_model() if isinstance(model, AdapterModel) else model


def _layer(model: nn.Module, path: str) -> LoraLayer:
    layer = _base(model).get_submodule(path)
    assert isinstance(layer, LoraLayer)
    return layer


def _check_library(model: AdapterModel, names: list[str]) -> tuple[list[str], int]:
    """The adapted paths and the rank every expert shares; a clear error for anything Arrow cannot route."""
    reference: tuple[str, dict[str, tuple[torch.Size, torch.Size]]] | None = None
    for name in names:
        config = model.peft_config[name]
        if not isinstance(config, LoraConfig) or config.peft_type != "LORA":
            raise ConfigError(f"Arrow routes LoRA adapters; {name!r} is {config.peft_type}")
        if config.use_dora or config.arrow_config:
            raise ConfigError(f"Arrow experts must be plain LoRA adapters; {name!r} uses "
                              f"{'DoRA' if config.use_dora else 'arrow_config'}")
        shapes: dict[str, tuple[torch.Size, torch.Size]] = {}
        for path, mod in iter_adapter_modules(model.base_model):
            if isinstance(mod, LoraLayer) and name in mod.lora_A:
                if mod.kind not in ("linear", "conv1d") or type(mod).forward is not _linear_forward():
                    raise ConfigError(f"Arrow routes only nn.Linear and Conv1D layers; adapter {name!r} adapts "
                                      f"{path} ({type(mod.base_layer).__name__})")
                shapes[path] = (mod.lora_A[name].shape, mod.lora_B[name].shape)
        if reference is None:
            reference = (name, shapes)
            continue
        ref_name, ref = reference
        if set(shapes) != set(ref):
            diff = sorted(set(shapes) ^ set(ref))
            raise ConfigError(f"adapter {name!r} adapts other modules than {ref_name!r} (e.g. {diff[:3]}); "
                              "Arrow experts must adapt the same modules")
        bad = [p for p in shapes if shapes[p] != ref[p]]
        if bad:
            raise ConfigError(f"adapter {name!r} has other shapes (rank) than {ref_name!r} at {bad[0]}: "
                              f"{[tuple(s) for s in shapes[bad[0]]]} vs {[tuple(s) for s in ref[bad[0]]]}")
    assert reference is not None
    paths = sorted(reference[1])
    return paths, int(next(iter(reference[1].values()))[0][0])


def _linear_forward() -> object:
    from .layers import LoraLinear

    return LoraLinear.forward


def _exact_paths(paths: list[str]) -> str:
    """A ``target_modules`` regex matching exactly these module paths."""
    import re

    return "^(" + "|".join(re.escape(p) for p in paths) + ")$"
