"""Compositions on the client: publish one, and load one into a model (routed with Arrow or a learned
router, or stacked).

A composition version pins its members by commit; loading pulls each member (through the cache, like any
pull) and, for Arrow, the prototypes file the registry computed at publish (verified by sha256), so no
SVD runs here; for a learned router, the router file (verified the same way), which with the members makes
a Poly adapter (:mod:`sdk.tuners.poly.skills`): call the model with ``task_ids=``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import AdapterError
from . import trust
from .api import parse_ref
from .transfers import download

if TYPE_CHECKING:
    from torch import nn

    from ..model import AdapterModel
    from .api import Client

ROOT = "/api/v1/compositions"
PROTOTYPES_FILE = "arrow_prototypes.safetensors"
ROUTER_FILE = "poly_router.safetensors"
#: The most members a composition answer may list (the registry's own bound).
MAX_MEMBERS = 64


def create_composition(client: Client, name: str, members: Sequence[str | tuple[str, float] | dict[str, Any]],
                       routing: dict[str, Any], *, alias: str | None = None, description: str | None = None,
                       private: bool = False, router: nn.Module | bytes | None = None) -> dict[str, Any]:
    """Publish a new version of composition ``name`` (``ns/name``). ``members``: ``"ns/adapter[@ref]"``,
    ``(ref, weight)`` or ``{"adapter", "weight", "role"}``; ``routing``: ``{"kind": "stacked"}``,
    ``{"kind": "arrow", "top_k", "router_temperature", "use_gks", "rng_seed"}`` or ``{"kind": "router",
    "n_tasks", "n_splits"}`` with ``router``: the model from :func:`poly_over_members` (trained) or a router
    file's bytes."""
    ns, comp, _ = parse_ref(name)
    body_members = []
    for m in members:
        if isinstance(m, str):
            body_members.append({"adapter": m})
        elif isinstance(m, tuple):
            body_members.append({"adapter": m[0], "weight": float(m[1])})
        else:
            body_members.append(dict(m))
    if (routing.get("kind") == "router") != (router is not None):
        raise AdapterError("router= goes with routing {'kind': 'router', ...}, and router routing needs it")
    if router is not None:
        from ..tuners.poly.skills import router_bytes, router_tensors

        data = router if isinstance(router, bytes) else router_bytes(router_tensors(router),
                                                                     getattr(router, "poly_members", ()))
        routing = {**routing, "router_file": base64.b64encode(data).decode("ascii")}
    body: dict[str, Any] = {"members": body_members, "routing": routing, "private": private}
    if alias is not None:
        body["alias"] = alias
    if description is not None:
        body["description"] = description
    return client.http.json("POST", f"{ROOT}/{ns}/{comp}/versions", json=body, idempotent=False)


def composition_version(client: Client, ref: str) -> dict[str, Any]:
    """The version ``ns/name[@ref]`` of a composition, its answer checked before use."""
    ns, name, at = parse_ref(ref)
    info = client.http.json("GET", f"{ROOT}/{ns}/{name}/versions/{at or 'latest'}")
    if not isinstance(info, dict) or not isinstance(info.get("members"), list) or not isinstance(info.get("routing"),
                                                                                                 dict):
        raise trust.UnsafeResponse(f"the registry's answer for composition {ns}/{name} is malformed")
    if not 0 < len(info["members"]) <= MAX_MEMBERS:
        raise trust.UnsafeResponse(f"composition {ns}/{name} lists {len(info['members'])} members")
    for m in info["members"]:
        trust.name(m.get("adapter"))
        trust.commit(m.get("commit"))
    return info


def poly_over_members(client: Client, model: nn.Module, members: Sequence[str], n_tasks: int,
                      n_splits: int = 1) -> AdapterModel:
    """``model`` with a trainable Poly router over the LoRA adapters ``members`` (``ns/name[@ref]``, pulled and
    pinned by commit: the model's ``poly_members``); train it with ``sdk.train`` (``task_ids`` in the batches),
    then publish it with ``create_composition(name, model.poly_members, {"kind": "router", "n_tasks": …},
    router=model)``."""
    from ..tuners.poly.skills import poly_over_loras

    folders, pinned = [], []
    for ref in members:
        resolved = client.resolve(ref)
        folders.append(client.pull(f"{resolved.name}@{resolved.commit}"))
        pinned.append(f"{resolved.name}@{resolved.commit}")
    out = poly_over_loras(model, folders, n_tasks, n_splits)
    out.poly_members = [p.rsplit("@", 1)[1] for p in pinned]
    out.poly_refs = pinned
    return out  # type: ignore[return-value]


def load_composition(client: Client, model: nn.Module, ref: str) -> AdapterModel:
    """``model`` with composition ``ref``'s members loaded and combined as it says."""
    import torch

    from ..model import AdapterModel
    from ..tuners.lora.arrow import ArrowConfig
    from ..tuners.lora.arrow_model import create_arrow_model

    info = composition_version(client, ref)
    members, routing = info["members"], info["routing"]
    folders = [client.pull(f"{m['adapter']}@{m['commit']}") for m in members]
    kind = routing.get("kind")
    if kind == "arrow":
        tasks = [f for f, m in zip(folders, members, strict=True) if m.get("role", "task") == "task"]
        general = [f for f, m in zip(folders, members, strict=True) if m.get("role") == "general"]
        config = ArrowConfig(top_k=int(routing["top_k"]), router_temperature=float(routing["router_temperature"]),
                             use_gks=bool(routing["use_gks"]), rng_seed=routing.get("rng_seed"))
        protos = _stored_file(client, info, PROTOTYPES_FILE)
        return create_arrow_model(model, tasks, config, general or None, client=client, prototypes=protos)
    if kind == "router":
        from ..tuners.poly.skills import poly_over_loras

        router = _stored_file(client, info, ROUTER_FILE)
        out = poly_over_loras(model, folders, int(routing["n_tasks"]), int(routing.get("n_splits", 1)), router)
        out.requires_grad_(False)
        return out.eval()  # type: ignore[return-value]
    if kind != "stacked":
        raise AdapterError(f"composition {info.get('composition')} uses routing {kind!r}, which this SDK cannot load")
    names = [f"m{i}" for i in range(len(folders))]
    out = AdapterModel.from_pretrained(model, folders[0], adapter_name=names[0])
    for name, folder in zip(names[1:], folders[1:], strict=True):
        out.load_adapter(folder, name)
    weights = [float(m.get("weight", 1.0)) for m in members]
    if all(w == 1.0 for w in weights):
        out.set_adapter(names)
    else:  # ΔW = Σ wᵢ·ΔWᵢ exactly: concatenate the scaled factors into one adapter
        with torch.no_grad():
            out.add_weighted_adapter(names, weights, "composition", combination_type="cat")
        out.set_adapter("composition")
    return out


def _stored_file(client: Client, info: dict[str, Any], filename: str) -> dict[str, Any]:
    """The tensors of the version's stored file ``filename``, downloaded once (by sha256) into the cache."""
    from safetensors.torch import load_file

    entry = next((f for f in info.get("files", []) if f.get("filename") == filename), None)
    if entry is None:
        raise trust.UnsafeResponse(f"composition {info.get('composition')} comes without {filename}")
    sha, size = trust.sha256(entry.get("sha256")), trust.size(entry.get("size"))
    ns, name = trust.name(info.get("composition"))
    version = trust.version_number(info.get("version"))
    dest = client.cache.root / "compositions" / f"{sha}.safetensors"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not (dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == sha):
        download(client.http, f"{ROOT}/{ns}/{name}/versions/{version}/files/{filename}", dest, size=size,
                 sha256=sha, label=f"{ns}/{name}@{version} {filename}", quiet=client.quiet)
    return load_file(str(dest))
