"""Publishing a composition version: pin every member by commit, check they fit together, compute Arrow's
prototypes or check a learned router's file (outside any transaction), then write the version in one short
transaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from typing import Any

import msgspec
import torch
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ...db.models import AdapterVersion, Composition, CompositionAlias, CompositionVersion, Event
from ...errors import BadRequest, Conflict, TooLarge, reject
from ...names import check_alias, check_part
from ...storage import BlobStore
from ..adapters import service as adapters
from ..auth.tokens import Principal
from .prototypes import arrow_factors, check_library, check_router_file, prototypes_file
from .schemas import ArrowRouting, CompositionIn, RouterRouting

#: The most member weight bytes read to compute one version's Arrow prototypes.
MAX_MEMBER_BYTES = 1 << 30
WEIGHTS_FILE = "adapter_model.safetensors"


def _split(ref: str) -> tuple[str, str, str | None]:
    body, has_at, at = ref.partition("@")
    ns, sep, name = body.partition("/")
    if not sep or "/" in name or (has_at and not at):
        raise BadRequest(f"members are named 'namespace/name[@version|alias|commit]', got {ref[:100]!r}")
    return check_part(ns, "namespace"), check_part(name, "adapter name"), at or None


async def _pin(db: AsyncSession, principal: Principal, data: CompositionIn
               ) -> tuple[list[dict[str, Any]], int, bool, list[tuple[str, int] | None]]:
    """Members pinned by commit, the base model they all fit, whether any is private, and where each
    member's weights file is stored (key, size)."""
    pinned, versions, bases, private = [], [], set(), False
    for m in data.members:
        ns, name, at = _split(m.adapter)
        adapter = await adapters.get_adapter(db, principal, ns, name)  # 404 unless the caller can read it
        version = await adapters.resolve_version(db, adapter, at)
        bases.add(adapter.base_model_id)
        private = private or adapter.visibility == "private"
        routed = "Arrow" if isinstance(data.routing, ArrowRouting) else "a learned router" \
            if isinstance(data.routing, RouterRouting) else None
        if routed and (adapter.method != "LORA" or version.config.get("use_dora")):
            raise reject(f"{routed} routes plain LoRA adapters; member {ns}/{name}@{version.version} is "
                         f"{adapter.method}{' with DoRA' if version.config.get('use_dora') else ''}",
                         found=adapter.method)
        pinned.append({"adapter": f"{ns}/{name}", "version": version.version, "commit": version.commit,
                       "role": m.role, "weight": m.weight})
        f = next((f for f in version.files if f.filename == WEIGHTS_FILE), None)
        versions.append((f.storage_key, f.size) if f is not None else None)
    if len(bases) != 1:
        raise reject("the members fit different base models; a composition's members must share one base-model "
                     "signature", found=f"{len(bases)} base models")
    commits = [p["commit"] for p in pinned]
    if len(set(commits)) != len(commits):
        raise reject("a member version is listed twice", found="duplicate member")
    return pinned, bases.pop(), private, versions


def _check_roles(data: CompositionIn) -> None:
    tasks = [m for m in data.members if m.role == "task"]
    general = [m for m in data.members if m.role == "general"]
    routing = data.routing
    if not isinstance(routing, ArrowRouting):
        if general:
            raise BadRequest("'general' members are for Arrow routing with use_gks")
        return
    if general and not routing.use_gks:
        raise BadRequest("'general' members are only used with use_gks=true")
    if routing.use_gks and not general:
        raise BadRequest("use_gks=true needs at least one member with role 'general'")
    if routing.top_k > len(tasks):
        raise BadRequest(f"top_k={routing.top_k} is more than the {len(tasks)} task members")


async def _read_weights(store: BlobStore, stored: tuple[str, int] | None, label: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    if stored is None:
        raise reject(f"member {label} has no {WEIGHTS_FILE}", expected=WEIGHTS_FILE)
    chunks = [c async for c in await store.open_range(stored[0])]
    return await asyncio.to_thread(load, b"".join(chunks))


async def _member_factors(store: BlobStore, pinned: list[dict[str, Any]], versions: list[tuple[str, int] | None]
                          ) -> tuple[list[dict[str, tuple[torch.Tensor, torch.Tensor]]], list[str]]:
    """Every member's ``path -> (A, B)`` (at most :data:`MAX_MEMBER_BYTES` read in all) and its label."""
    total = sum(v[1] for v in versions if v is not None)
    if total > MAX_MEMBER_BYTES:
        raise TooLarge(f"the members' weights take {total} bytes; a routed composition is checked for at most "
                       f"{MAX_MEMBER_BYTES} bytes of members")
    labels = [f"{p['adapter']}@{p['version']}" for p in pinned]
    libs = [arrow_factors(await _read_weights(store, v, label), label)
            for v, label in zip(versions, labels, strict=True)]
    return libs, labels


async def _router_file(store: BlobStore, routing: RouterRouting, pinned: list[dict[str, Any]],
                       versions: list[tuple[str, int] | None]) -> bytes:
    """The uploaded router file, once it fits the members (their layers, one skill each) and the task count."""
    libs, labels = await _member_factors(store, pinned, versions)
    check_library(libs, labels, same_rank=False)
    layers = {path: (a.shape[1], b.shape[0]) for path, (a, b) in libs[0].items()}
    await asyncio.to_thread(check_router_file, routing.router_file, layers, routing.n_tasks, routing.n_splits,
                            [p["commit"] for p in pinned])
    return routing.router_file


async def _prototypes(store: BlobStore, data: CompositionIn, pinned: list[dict[str, Any]],
                      versions: list[tuple[str, int] | None]) -> bytes:
    routing = data.routing
    assert isinstance(routing, ArrowRouting)
    libs, labels = await _member_factors(store, pinned, versions)
    check_library(libs, labels)
    tasks = [lib for lib, p in zip(libs, pinned, strict=True) if p["role"] == "task"]
    general = [lib for lib, p in zip(libs, pinned, strict=True) if p["role"] == "general"]
    commits = [p["commit"] for p in pinned if p["role"] == "task"]
    return await asyncio.to_thread(prototypes_file, tasks, general, routing.use_gks, routing.rng_seed, commits)


async def publish(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, principal: Principal, ns: str,
                  name: str, data: CompositionIn) -> tuple[Composition, CompositionVersion]:
    """Create the next version of ``ns/name`` (and the composition with its first version)."""
    check_part(ns, "namespace")
    check_part(name, "composition name")
    principal.require_write(ns)
    if data.alias is not None:
        check_alias(data.alias)
        if data.alias == "latest":
            raise BadRequest("'latest' always points at the newest version and cannot be set")
    _check_roles(data)
    async with sessionmaker() as db:
        pinned, base_id, private, versions = await _pin(db, principal, data)
        await db.rollback()
    routing = msgspec.to_builtins(data.routing)
    protos = None
    if isinstance(data.routing, ArrowRouting):
        protos = await _prototypes(store, data, pinned, versions)
    elif isinstance(data.routing, RouterRouting):
        protos = await _router_file(store, data.routing, pinned, versions)
        routing.pop("router_file")  # stored as the version's file, by its sha256
    async with sessionmaker() as db:
        await db.execute(insert(Composition).values(
            namespace=ns, name=name, base_model_id=base_id, description=data.description or "",
            visibility="private" if private or data.private else "public", next_version=1,
        ).on_conflict_do_nothing(index_elements=["namespace", "name"]))
        comp = (await db.execute(select(Composition).where(Composition.namespace == ns, Composition.name == name)
                                 .with_for_update(of=Composition))).unique().scalar_one()
        if comp.base_model_id != base_id:
            raise Conflict(f"composition {ns}/{name} is for another base model than these members")
        for pin in pinned:  # a member deleted meanwhile would leave a dangling pin
            found = (await db.execute(select(AdapterVersion.id).where(AdapterVersion.commit == pin["commit"]))
                     ).scalar_one_or_none()
            if found is None:
                raise Conflict(f"member {pin['adapter']}@{pin['version']} was deleted while publishing")
        number = comp.next_version
        comp.next_version = number + 1
        if private or data.private:
            comp.visibility = "private"
        if data.description is not None:
            comp.description = data.description
        now = dt.datetime.now(dt.UTC)
        comp.updated_at = now
        sha = hashlib.sha256(protos).hexdigest() if protos is not None else None
        digest = hashlib.sha1(json.dumps([ns, name, number, pinned, routing, sha], sort_keys=True).encode())
        version = CompositionVersion(composition_id=comp.id, version=number, commit=digest.hexdigest(),
                                     members=pinned, routing=routing, prototypes=protos, prototypes_sha256=sha,
                                     prototypes_size=len(protos) if protos is not None else None,
                                     created_by=principal.name, created_at=now)
        db.add(version)
        await db.flush()
        for alias in ["latest"] + ([data.alias] if data.alias else []):
            await db.execute(insert(CompositionAlias).values(
                composition_id=comp.id, name=alias, version_id=version.id, updated_at=now,
            ).on_conflict_do_update(index_elements=["composition_id", "name"],
                                    set_={"version_id": version.id, "updated_at": now}))
        db.add(Event(actor=principal.name, kind="composition", subject=f"{ns}/{name}",
                     data={"version": number, "commit": version.commit, "routing": routing.get("kind")}))
        await db.commit()
        await db.refresh(comp)
        return comp, version
