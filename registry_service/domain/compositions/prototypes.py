"""Arrow prototypes of a composition's members, computed once at publish and stored as a safetensors file.

The file holds one float32 tensor per adapted layer, keyed by the layer's path in the base model, of shape
(task members, in_features), rows in member order, computed after GKS when the routing uses it. The math is
the SDK's (:mod:`sdk.tuners.lora.arrow_math`), so a client gets exactly what it would compute itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

from ...errors import Problem, UploadRejected, reject

#: PEFT's key prefix of a LoRA factor on disk.
PREFIX = "base_model.model."
#: The largest prototypes file.
MAX_PROTOTYPE_BYTES = 64 * 2**20


def arrow_factors(tensors: dict[str, torch.Tensor], member: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``path -> (A, B)`` of one LoRA member; 422 naming the member when Arrow cannot route it."""
    from sdk.merging.lora_keys import group_lora_tensors

    factors, _ = group_lora_tensors(tensors, PREFIX)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for path, parts in factors.items():
        if "a" not in parts or "b" not in parts:
            raise reject(f"member {member} has a LoRA factor without its partner at {path}", tensor=path)
        (a, emb), (b, _) = parts["a"], parts["b"]
        if emb or a.dim() != 2 or b.dim() != 2:
            raise reject(f"Arrow routes only Linear and Conv1D layers; member {member} adapts {path} differently",
                         tensor=path)
        out[path] = (a, b)
    if not out:
        raise reject(f"member {member} has no LoRA factors to route", found="no lora_A/lora_B tensors")
    return out


def check_library(libs: Sequence[dict[str, tuple[torch.Tensor, torch.Tensor]]], members: Sequence[str],
                  same_rank: bool = True) -> None:
    """Every member adapts the same layers, with the same shapes (one rank) when ``same_rank`` (Arrow needs it;
    a learned router's skills may differ in rank)."""
    ref = libs[0]
    for lib, member in zip(libs[1:], members[1:], strict=True):
        if set(lib) != set(ref):
            diff = sorted(set(lib) ^ set(ref))[:3]
            raise reject(f"member {member} adapts other layers than {members[0]} (e.g. {diff}); Arrow members must "
                         "adapt the same layers", found=", ".join(diff))
        for path, (a, b) in lib.items():
            if not same_rank and (a.shape[1], b.shape[0]) == (ref[path][0].shape[1], ref[path][1].shape[0]):
                continue
            if a.shape != ref[path][0].shape or b.shape != ref[path][1].shape:
                raise reject(f"member {member} has other shapes (rank) than {members[0]} at {path}: "
                             f"A {tuple(a.shape)} vs {tuple(ref[path][0].shape)}", tensor=path)


def prototypes_file(tasks: Sequence[dict[str, tuple[torch.Tensor, torch.Tensor]]],
                    general: Sequence[dict[str, tuple[torch.Tensor, torch.Tensor]]],
                    use_gks: bool, rng_seed: int | None, commits: Sequence[str]) -> bytes:
    """The safetensors bytes of every layer's prototypes."""
    from safetensors.torch import save

    from sdk.tuners.lora.arrow_math import library_prototypes

    protos = library_prototypes(tasks, general, use_gks, rng_seed)
    data = save({k: v.contiguous() for k, v in protos.items()},
                metadata={"format": "pt", "members": json.dumps(list(commits))})
    if len(data) > MAX_PROTOTYPE_BYTES:
        raise reject(f"the Arrow prototypes would take {len(data)} bytes, more than {MAX_PROTOTYPE_BYTES}",
                     expected=f"<= {MAX_PROTOTYPE_BYTES} bytes")
    return data



def check_router_file(data: bytes, layers: dict[str, tuple[int, int]], n_tasks: int, n_splits: int,
                      commits: Sequence[str]) -> None:
    """422 with every problem unless ``data`` is a router file for members adapting ``layers`` (``path -> (in,
    out)``, one skill per member) and ``n_tasks`` tasks: a valid safetensors file, float and finite values, and
    trained over these members in this order when its metadata lists them."""
    from safetensors.torch import load

    from sdk.safetensors_header import non_float_problems, read_header_from_bytes
    from sdk.tuners.poly.skills import router_problems

    header, problems = read_header_from_bytes(data)
    if header is None or problems:
        raise UploadRejected(problems or [Problem(None, "safetensors", None, "the router file is unreadable")])
    problems = non_float_problems(header)
    shapes = {k: t.shape for k, t in header.tensors.items()}
    dtypes = {k: t.dtype for k, t in header.tensors.items()}
    problems += [Problem(None, None, None, p)
                 for p in router_problems(shapes, dtypes, layers, n_tasks, len(commits), n_splits)]
    if not problems:
        problems += [Problem(k, "finite values", "NaN or infinity", f"{k}: the router holds NaN or infinite values")
                     for k, t in load(data).items() if not torch.isfinite(t).all()][:5]
    if problems:
        raise UploadRejected(problems)
    listed = _members(header.metadata.get("members"))
    if listed and listed != list(commits):
        raise reject("the router file was trained over other members (or in another order) than these",
                     expected=", ".join(c[:12] for c in commits), found=", ".join(c[:12] for c in listed))


def _members(text: str | None) -> list[str]:
    """The commits a router file's metadata lists (empty when it lists none or not as a JSON list of strings)."""
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []
