"""A Poly adapter whose skills are existing LoRA adapters: the ``router`` composition's math.

Skill ``i`` is LoRA member ``i``. Its factors occupy a block of ranks of their own in the Poly adapter
(rank ``R`` = the sum of the members' ranks; every other block of skill ``i`` is zero), so that Poly's
product of mixed factors, ``(Σ wᵢ·Aᵢ)(Σ wⱼ·Bⱼ)``, has no cross terms: a sample gets ``Σ wᵢ²·ΔWᵢ·x``.
Each member's LoRA scale (``alpha/r``, or rsLoRA's) and Poly's ``1/R`` are folded into B, so a task routed
wholly to member ``i`` gets exactly that member's output. Only the router (``module_logits`` of every
layer) trains; it is saved as a small safetensors file, keyed by layer path, of shape
``(n_tasks, n_splits·members)`` per layer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ...errors import ConfigError, FormatError
from ...formats import PREFIX, read_adapter_weights
from ...merging.lora_keys import group_lora_tensors
from ..lora.config import LoraConfig
from .config import MAX_SPLITS, PolyConfig
from .layers import PolyLayer

#: The router file of a ``router`` composition.
ROUTER_FILE = "poly_router.safetensors"
#: Bounds of a router composition: tasks, and the router file's size.
MAX_ROUTER_TASKS = 4096
MAX_ROUTER_BYTES = 2**20  # base64 in a JSON body: stays under the default 2 MiB request limit

Skills = dict[str, tuple[Tensor, Tensor, float]]  # layer path -> (A, B, LoRA scale)


def lora_skills(folder: str | Path) -> Skills:
    """``path -> (A, B, scale)`` of a saved plain LoRA adapter (refusing what a Poly skill cannot hold)."""
    from ...config import read_config_dict

    raw = read_config_dict(folder)
    if str(raw.get("peft_type", "")).upper() != "LORA":
        raise ConfigError(f"{folder}: a router composition's members are LoRA adapters, this is {raw.get('peft_type')}")
    config = LoraConfig.from_dict(raw)
    if config.use_dora or config.bias != "none" or config.modules_to_save:
        raise ConfigError(f"{folder}: a Poly skill holds A and B only; this LoRA adapter also has DoRA, biases or "
                          "modules_to_save")
    factors, other = group_lora_tensors(read_adapter_weights(folder), PREFIX)
    if other:
        raise ConfigError(f"{folder}: tensors besides lora_A/lora_B ({sorted(other)[:3]}) cannot be Poly skills")
    out: Skills = {}
    for path, parts in factors.items():
        if "a" not in parts or "b" not in parts or parts["a"][1] or parts["a"][0].dim() != 2:
            raise ConfigError(f"{folder}: {path} is not a Linear LoRA pair (A and B)")
        a, b = parts["a"][0], parts["b"][0]
        out[path] = (a, b, config.scaling_for(path, a.shape[0]))
    return out


def poly_over_loras(model: nn.Module, folders: Sequence[str | Path], n_tasks: int, n_splits: int = 1,
                    router: Mapping[str, Tensor] | None = None, adapter_name: str = "default") -> nn.Module:
    """``model`` with one Poly adapter whose skills are the LoRA adapters in ``folders`` (frozen) and whose
    router is ``router`` (``path -> module_logits``) or starts at zero; only the router is trainable.
    Call it with ``task_ids=`` (one task per sample); train it with ``sdk.train``."""
    from ...model import AdapterModel

    if not 0 < n_tasks <= MAX_ROUTER_TASKS:
        raise ConfigError(f"n_tasks must be in 1..{MAX_ROUTER_TASKS}, got {n_tasks}")
    if not folders:
        raise ConfigError("a router composition needs at least one member")
    members = [lora_skills(f) for f in folders]
    paths = list(members[0])
    for folder, skills in zip(folders[1:], members[1:], strict=True):
        if set(skills) != set(paths):
            diff = sorted(set(skills) ^ set(paths))[:3]
            raise ConfigError(f"{folder} adapts other layers than {folders[0]} (e.g. {diff}); the members of a "
                              "router composition must adapt the same layers")
    rank = sum(skills[paths[0]][0].shape[0] for skills in members)
    if any(sum(s[p][0].shape[0] for s in members) != rank for p in paths):
        raise ConfigError("the members' ranks differ from layer to layer in a way one Poly rank cannot hold")
    config = PolyConfig(r=rank, target_modules=paths, n_tasks=n_tasks, n_skills=len(members), n_splits=n_splits,
                        task_type=_task_type(folders[0]))
    wrapped = AdapterModel(model, config, adapter_name)
    with torch.no_grad():
        for path in paths:
            layer = wrapped.base_model.get_submodule(path)
            assert isinstance(layer, PolyLayer)
            _fill_skills(layer, adapter_name, [m[path] for m in members], n_splits)
            logits = layer.poly_logits[adapter_name]
            logits.zero_()
            if router is not None:
                logits.copy_(router[path])
    for name, p in wrapped.named_parameters():
        p.requires_grad_(name.endswith(f"poly_logits.{adapter_name}"))
    return wrapped


def _task_type(folder: str | Path) -> str | None:
    """The first member's ``task_type`` (PEFT's model class for the export follows it)."""
    from ...config import read_config_dict

    value = read_config_dict(folder).get("task_type")
    return value if isinstance(value, str) else None


def _fill_skills(layer: PolyLayer, name: str, skills: list[tuple[Tensor, Tensor, float]], q: int) -> None:
    a_all, b_all = layer.poly_lora_A[name], layer.poly_lora_B[name]
    a_all.zero_()
    b_all.zero_()
    total = a_all.shape[-1]
    d_in, d_out = layer.in_features // q, layer.out_features // q
    offset = 0
    for i, (a, b, scale) in enumerate(skills):
        r = a.shape[0]
        for j in range(q):
            a_all[j, i, :, offset:offset + r] = a[:, j * d_in:(j + 1) * d_in].T
            b_all[j, i, offset:offset + r, :] = (b[j * d_out:(j + 1) * d_out, :] * (scale * total)).T
        offset += r


def router_tensors(model: nn.Module, adapter_name: str = "default") -> dict[str, Tensor]:
    """``path -> module_logits`` of a Poly adapter (what a router file holds)."""
    from ...layers import iter_adapter_modules
    from ...model import AdapterModel

    root = model.base_model if isinstance(model, AdapterModel) else model
    out = {path: m.poly_logits[adapter_name].detach().float().cpu().contiguous()
           for path, m in iter_adapter_modules(root) if isinstance(m, PolyLayer) and adapter_name in m.poly_logits}
    if not out:
        raise ConfigError(f"the model has no Poly adapter {adapter_name!r}")
    return out


def router_bytes(tensors: Mapping[str, Tensor], members: Sequence[str] = ()) -> bytes:
    """A router file: safetensors, float32, keyed by layer path; ``members`` (commits) in its metadata."""
    from safetensors.torch import save

    data = save({k: v.float().contiguous() for k, v in tensors.items()},
                metadata={"format": "pt", "members": json.dumps(list(members))})
    if len(data) > MAX_ROUTER_BYTES:
        raise FormatError(f"the router file would take {len(data)} bytes, more than {MAX_ROUTER_BYTES}")
    return data


def router_problems(shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str],
                    layers: Mapping[str, tuple[int, int]], n_tasks: int, n_skills: int, n_splits: int) -> list[str]:
    """What is wrong with a router file's tensors (``shapes``/``dtypes`` by key) for members adapting ``layers``
    (``path -> (in, out)``); empty when it fits."""
    problems = []
    if not 0 < n_splits <= MAX_SPLITS:
        problems.append(f"n_splits must be in 1..{MAX_SPLITS}, got {n_splits}")
    for key in sorted(set(shapes) - set(layers))[:5]:
        problems.append(f"{key}: in the router file but no member adapts this layer")
    for path, (d_in, d_out) in layers.items():
        if path not in shapes:
            problems.append(f"{path}: missing from the router file")
            continue
        want = (n_tasks, n_splits * n_skills)
        if tuple(shapes[path]) != want:
            problems.append(f"{path}: shape {list(shapes[path])}, expected {list(want)} (n_tasks, n_splits·members)")
        if dtypes.get(path) not in ("F32", "F16", "BF16", "F64"):
            problems.append(f"{path}: dtype {dtypes.get(path)} is not a float type")
        if d_in % n_splits or d_out % n_splits:
            problems.append(f"{path}: n_splits={n_splits} must divide in_features={d_in} and out_features={d_out}")
    return problems[:20]
