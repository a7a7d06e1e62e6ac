"""Reading adapters: visibility, version references, search, and their JSON forms."""

from __future__ import annotations

from typing import Any, Unpack

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import Adapter, AdapterVersion, Alias
from ...errors import NotFound
from ...names import COMMIT, check_part
from ..auth.tokens import Principal
from .reads import MAX_VERSION, VERSION_NUMBER, AdapterRow, SearchFilters, VersionRow, search_adapters
from .redaction import InputsView, redact_parents, visible_files


def visible(principal: Principal) -> ColumnElement[bool]:
    """SQL condition: adapters the caller may see (public ones, and private ones it can read)."""
    if principal.is_admin:
        return true()
    own = Adapter.namespace == principal.namespace if principal.namespace and principal.scopes else false()
    return or_(Adapter.visibility == "public", own)


async def get_adapter(db: AsyncSession, principal: Principal, ns: str, name: str, *, lock: bool = False) -> Adapter:
    """The adapter ``ns/name``; 404 when missing or private to someone else."""
    check_part(ns, "namespace")
    check_part(name, "adapter name")
    stmt = select(Adapter).where(Adapter.namespace == ns, Adapter.name == name, visible(principal))
    if lock:
        stmt = stmt.with_for_update(of=Adapter)
    row = (await db.execute(stmt)).unique().scalar_one_or_none()
    if row is None:
        raise NotFound(f"adapter {ns}/{name} not found")
    return row


async def resolve_version(db: AsyncSession, adapter: Adapter, ref: str | int | None) -> AdapterVersion:
    """A version by number, alias (``latest`` when ``ref`` is None) or 40-hex commit."""
    ref_s = "latest" if ref is None or ref == "" else str(ref)
    stmt = select(AdapterVersion).where(AdapterVersion.adapter_id == adapter.id)
    if VERSION_NUMBER.match(ref_s):  # ASCII digits only: '²' is a digit to str.isdigit, not to int()
        if int(ref_s) > MAX_VERSION:  # past the column's range: no such version, without asking
            raise NotFound(f"{adapter.namespace}/{adapter.name} has no version {ref_s!r}")
        stmt = stmt.where(AdapterVersion.version == int(ref_s))
    elif COMMIT.match(ref_s):
        stmt = stmt.where(AdapterVersion.commit == ref_s)
    else:
        stmt = stmt.join(Alias, Alias.version_id == AdapterVersion.id).where(
            Alias.adapter_id == adapter.id, Alias.name == ref_s
        )
    row = (await db.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"{adapter.namespace}/{adapter.name} has no version {ref_s!r}")
    return row


async def versions_of(db: AsyncSession, adapter: Adapter, *, limit: int | None = None) -> list[AdapterVersion]:
    """The adapter's versions, newest first (the newest ``limit`` of them when given)."""
    stmt = select(AdapterVersion).where(AdapterVersion.adapter_id == adapter.id)
    return list((await db.execute(stmt.order_by(AdapterVersion.version.desc()).limit(limit))).scalars())


async def aliases_of(db: AsyncSession, adapter: Adapter) -> dict[str, int]:
    """Alias name -> version number."""
    rows = await db.execute(
        select(Alias.name, AdapterVersion.version)
        .join(AdapterVersion, AdapterVersion.id == Alias.version_id)
        .where(Alias.adapter_id == adapter.id)
        .order_by(Alias.name)
    )
    return {name: version for name, version in rows}


async def search(db: AsyncSession, principal: Principal, **filters: Unpack[SearchFilters]
                 ) -> tuple[list[AdapterRow], int]:
    """Adapters matching every given filter, newest first, with the number of matches (counted up to
    :data:`.reads.MAX_COUNTED`); :func:`.reads.search_adapters` has the cursor and whether more follow."""
    found = await search_adapters(db, principal, **filters)
    return found.items, found.total


def describe_adapter(row: Adapter | AdapterRow, aliases: dict[str, int] | None = None) -> dict[str, Any]:
    """The JSON form of an adapter."""
    out: dict[str, Any] = {
        "name": f"{row.namespace}/{row.name}",
        "base_model": f"{row.base_model.namespace}/{row.base_model.name}",
        "base_model_fingerprint": row.base_model.fingerprint,
        "method": row.method,
        "description": row.description,
        "tags": list(row.tags or []),
        "visibility": row.visibility,
        "versions": row.next_version - 1,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }
    if aliases is not None:
        out["aliases"] = aliases
    return out


def describe_version(adapter: Adapter | AdapterRow, v: AdapterVersion | VersionRow, base_url: str = "",
                     view: InputsView | None = None) -> dict[str, Any]:
    """The JSON form of a version, with its files and their download URLs; ``view``: what the reader may
    see of a merged version's inputs (:mod:`.redaction`; None: a version with no parents)."""
    root = f"{base_url}/api/v1/adapters/{adapter.namespace}/{adapter.name}/versions/{v.version}/files"
    view = view or InputsView()
    return {
        "adapter": f"{adapter.namespace}/{adapter.name}",
        "version": v.version,
        "commit": v.commit,
        "config": v.config,
        "summary": v.summary,
        "parents": redact_parents(v.parents or [], view),
        "created_by": v.created_by,
        "created_at": v.created_at.isoformat() if v.created_at else None,
        "files": [
            {"filename": f.filename, "size": f.size, "sha256": f.sha256, "url": f"{root}/{f.filename}"}
            for f in visible_files(v, view)
        ],
    }
