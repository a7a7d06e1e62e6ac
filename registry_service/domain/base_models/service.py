"""Registering base models, computing their signatures, and finding them (by name, text or signature)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from sdk.errors import AdapterError
from sdk.signature import Signature, signature_from_config

from ...db.models import BaseModel, BaseModelFile
from ...errors import BadRequest, Conflict, NotFound, UploadRejected
from ...names import split_name
from ..auth.tokens import Principal
from ..events import new_event
from .weights import describe_file

#: Bounds on a ``config.json`` registered to build a signature: building the model (on the meta
#: device, so no memory for weights) still makes every module, and torch refuses sizes past int64.
MAX_CONFIG_LAYERS = 1024
MAX_CONFIG_EXPERTS = 1024
#: Layers × experts: the number of expert blocks the model would have.
MAX_CONFIG_EXPERT_BLOCKS = 65_536
MAX_CONFIG_INT = 2**31 - 1
MAX_CONFIG_DEPTH = 16
#: Modules of one signature (the largest mixture-of-experts models have under 100,000).
MAX_SIGNATURE_MODULES = 200_000


def config_problems(config: Any, where: str = "config", depth: int = 0) -> list[str]:
    """Every size in ``config`` (nested configs included) past the bounds above."""
    if depth > MAX_CONFIG_DEPTH:
        return [f"{where} is nested more than {MAX_CONFIG_DEPTH} levels deep"]
    problems: list[str] = []
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    layers = experts = 1
    for key, value in items:
        path = f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]"
        if isinstance(value, dict | list):
            problems += config_problems(value, path, depth + 1)
        elif isinstance(value, int) and not isinstance(value, bool):
            name = str(key).lower()
            if abs(value) > MAX_CONFIG_INT:
                problems.append(f"{path} = {value} is past {MAX_CONFIG_INT}")
            elif ("layers" in name or name == "n_layer") and value > MAX_CONFIG_LAYERS:
                problems.append(f"{path} = {value}: at most {MAX_CONFIG_LAYERS} layers")
            elif "experts" in name and value > MAX_CONFIG_EXPERTS:
                problems.append(f"{path} = {value}: at most {MAX_CONFIG_EXPERTS} experts")
            if "layers" in name or name == "n_layer":
                layers = max(layers, value)
            elif "experts" in name and "per_tok" not in name:
                experts = max(experts, value)
    if not problems and layers * experts > MAX_CONFIG_EXPERT_BLOCKS:
        problems.append(f"{where}: {layers} layers × {experts} experts is more than {MAX_CONFIG_EXPERT_BLOCKS} "
                        "expert blocks")
    return problems


async def build_signature(signature: dict[str, Any] | None, config: dict[str, Any] | None) -> Signature:
    """Parse a given signature, or build one from a ``config.json`` on the meta device (its sizes
    bounded first, see :func:`config_problems`); either has at most ``MAX_SIGNATURE_MODULES`` modules."""
    if signature is None and config is None:
        raise BadRequest("give a 'signature' or a 'config' (the model's config.json)")
    if config is not None and (problems := config_problems(config)):
        raise BadRequest(f"config.json is out of bounds: {'; '.join(problems[:5])}")
    modules = signature.get("modules") if isinstance(signature, dict) else None
    if isinstance(modules, list) and len(modules) > MAX_SIGNATURE_MODULES:
        raise BadRequest(f"the signature lists {len(modules)} modules; at most {MAX_SIGNATURE_MODULES}")
    try:
        if signature is not None:
            sig = Signature.from_dict(signature)
            if config is not None:
                from_config = await asyncio.to_thread(signature_from_config, config)
                if from_config.fingerprint != sig.fingerprint:
                    raise BadRequest("the signature does not match the one built from config.json")
            return sig
        assert config is not None
        sig = await asyncio.to_thread(signature_from_config, config)
    except AdapterError as exc:
        raise BadRequest(str(exc)) from exc
    if len(sig.modules) > MAX_SIGNATURE_MODULES:
        raise BadRequest(f"config.json makes a model of {len(sig.modules)} modules; at most {MAX_SIGNATURE_MODULES}")
    return sig


async def register(
    db: AsyncSession,
    principal: Principal,
    full_name: str,
    *,
    revision: str | None,
    signature: dict[str, Any] | None,
    config: dict[str, Any] | None,
    license: str | None = None,
) -> tuple[BaseModel, bool]:
    """Create a base model; registering the same signature again is a no-op. Returns (row, created)."""
    ns, name = split_name(full_name, "base model name")
    principal.require_write(ns)
    sig = await build_signature(signature, config)
    if not sig.modules:
        raise UploadRejected([], detail="the signature lists no modules")
    existing = await get(db, f"{ns}/{name}", missing_ok=True)
    if existing is not None:
        if existing.fingerprint == sig.fingerprint:
            return existing, False
        raise Conflict(
            f"base model {ns}/{name} is already registered with another signature "
            f"(fingerprint {existing.fingerprint[:12]}…, new {sig.fingerprint[:12]}…); register it under a new name"
        )
    row = BaseModel(
        namespace=ns,
        name=name,
        revision=revision,
        license=license,
        architecture=sig.architecture,
        model_type=sig.model_type,
        config=config,
        signature=sig.to_dict(),
        fingerprint=sig.fingerprint,
        created_by=principal.name,
    )
    db.add(row)
    db.add(new_event("base-model.registered", principal, namespace=ns, subject=f"{ns}/{name}",
                     details={"fingerprint": sig.fingerprint, "revision": revision, "modules": len(sig.modules)}))
    await db.flush()
    return row, True


async def get(db: AsyncSession, full_name: str, *, missing_ok: bool = False) -> BaseModel | None:
    """The base model ``ns/name`` (404 unless ``missing_ok``)."""
    ns, name = split_name(full_name, "base model name")
    row = (
        await db.execute(select(BaseModel).where(BaseModel.namespace == ns, BaseModel.name == name))
    ).scalar_one_or_none()
    if row is None and not missing_ok:
        raise NotFound(f"base model {ns}/{name} is not registered; register it with POST /api/v1/base-models")
    return row


async def search(db: AsyncSession, q: str | None, limit: int = 50, offset: int = 0) -> list[BaseModel]:
    """Base models whose name, namespace or architecture contains ``q``."""
    stmt = select(BaseModel).order_by(BaseModel.namespace, BaseModel.name).limit(limit).offset(offset)
    if q:
        like = f"%{q}%"
        stmt = stmt.where(
            or_(BaseModel.name.ilike(like), BaseModel.namespace.ilike(like), BaseModel.architecture.ilike(like))
        )
    return list((await db.execute(stmt)).scalars())


async def same_signature(db: AsyncSession, base: BaseModel, *, limit: int = 20) -> list[BaseModel]:
    """Other base models with ``base``'s signature fingerprint (its adapters fit them too), by name."""
    stmt = (select(BaseModel).where(BaseModel.fingerprint == base.fingerprint, BaseModel.id != base.id)
            .order_by(BaseModel.namespace, BaseModel.name).limit(limit))
    return list((await db.execute(stmt)).scalars())


def describe(row: BaseModel, *, with_signature: bool = False, files: Sequence[BaseModelFile] | None = None,
             root: str = "") -> dict[str, Any]:
    """The JSON form of a base model; with ``files`` (its weights, see ``weights.files_of``) also
    ``files`` and ``has_weights``, their URLs under ``root`` (the service's public URL)."""
    out: dict[str, Any] = {
        "name": f"{row.namespace}/{row.name}",
        "revision": row.revision,
        "license": row.license,
        "architecture": row.architecture,
        "model_type": row.model_type,
        "fingerprint": row.fingerprint,
        "modules": len(row.signature.get("modules", [])),
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }
    if files is not None:
        out["has_weights"] = bool(files)
        out["files"] = [describe_file(f, row, root) for f in files]
    if with_signature:
        out["signature"] = row.signature
    return out
