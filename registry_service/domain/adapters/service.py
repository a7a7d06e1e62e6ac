"""Reading adapters: visibility, version references, search, and their JSON forms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Unpack

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from sdk.serving_compat import facts_from_summary, serving_report

from ...db.models import Adapter, AdapterVersion, Alias
from ...errors import NotFound
from ...names import check_part
from ..auth.tokens import Principal
from .reads import AdapterRow, VersionRow
from .redaction import InputsView, redact_parents, visible_files
from .references import MAX_VERSION, VERSION_NUMBER, missing, refuse_yanked, version_ref, yank_info
from .search import SearchFilters, search_adapters, search_words


def visible(principal: Principal, table: Any = Adapter) -> ColumnElement[bool]:
    """SQL condition: rows of ``table`` (adapters, or another table with ``namespace`` and ``visibility``)
    the caller may see: public ones, and private ones it can read."""
    if principal.is_admin:
        return true()
    own = table.namespace == principal.namespace if principal.namespace and principal.scopes else false()
    return or_(table.visibility == "public", own)


async def get_named(db: AsyncSession, principal: Principal, table: Any, what: str, ns: str, name: str, *,
                    lock: bool = False) -> Any:
    """The ``what`` ``ns/name`` of ``table``; 404 when missing or private to someone else."""
    check_part(ns, "namespace")
    check_part(name, f"{what} name")
    stmt = select(table).where(table.namespace == ns, table.name == name, visible(principal, table))
    if lock:
        stmt = stmt.with_for_update(of=table)
    row = (await db.execute(stmt)).unique().scalar_one_or_none()
    if row is None:
        raise NotFound(f"{what} {ns}/{name} not found")
    return row


async def get_adapter(db: AsyncSession, principal: Principal, ns: str, name: str, *, lock: bool = False) -> Adapter:
    """The adapter ``ns/name``; 404 when missing or private to someone else."""
    return await get_named(db, principal, Adapter, "adapter", ns, name, lock=lock)


async def find_version(db: AsyncSession, ref: str | int | None, owner: str, versions: Any, aliases: Any,
                       owner_key: str, owner_id: int) -> Any:
    """A row of ``versions`` (``version``, ``commit``, ``<owner_key>``) by number, alias of ``aliases``
    (``latest`` when ``ref`` is None) or 40-hex commit; 404 naming ``owner`` when there is none."""
    kind, ref_s = version_ref(ref, owner)
    stmt = select(versions).where(getattr(versions, owner_key) == owner_id)
    if kind == "number":
        stmt = stmt.where(versions.version == int(ref_s))
    elif kind == "commit":
        stmt = stmt.where(versions.commit == ref_s)
    else:
        stmt = stmt.join(aliases, aliases.version_id == versions.id).where(
            getattr(aliases, owner_key) == owner_id, aliases.name == ref_s)
    row = (await db.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"{owner} has no version {ref_s!r}")
    return row


async def resolve_version(db: AsyncSession, adapter: Adapter, ref: str | int | None, *,
                          yanked_ok: bool = False) -> AdapterVersion:
    """A version by number, alias (``latest`` when ``ref`` is None) or 40-hex commit; 410 Gone with the
    reason for a yanked version (unless ``yanked_ok``), and for ``latest`` when every version is yanked."""
    owner = f"{adapter.namespace}/{adapter.name}"
    try:
        row = await find_version(db, ref, owner, AdapterVersion, Alias, "adapter_id", adapter.id)
    except NotFound:
        raise missing(owner, ref, adapter.next_version) from None
    refuse_yanked(owner, row, yanked_ok)
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
    """Adapters matching every given filter (:func:`.search.search_adapters`), with the exact number of
    matches (the pages count them all; the API counts up to :data:`.search.MAX_COUNTED`)."""
    found = await search_adapters(db, principal, count_upto=None, **filters)
    return found.items, found.total or 0


def describe_named(row: Any, aliases: dict[str, int] | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON fields every versioned object (an adapter, a composition) shares, then ``extra``, then its
    ``aliases`` when given."""
    out: dict[str, Any] = {
        "name": f"{row.namespace}/{row.name}",
        "base_model": f"{row.base_model.namespace}/{row.base_model.name}",
        **extra,
        "description": row.description,
        "visibility": row.visibility,
        "versions": row.next_version - 1,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }
    if aliases is not None:
        out["aliases"] = aliases
    return out


def describe_adapter(row: Adapter | AdapterRow, aliases: dict[str, int] | None = None) -> dict[str, Any]:
    """The JSON form of an adapter."""
    return describe_named(row, aliases, base_model_fingerprint=row.base_model.fingerprint, method=row.method,
                          tags=list(row.tags or []))


def serving_of(v: AdapterVersion | VersionRow) -> dict[str, Any]:
    """The version's serving-compatibility report (computed from its config and summary if none was stored)."""
    if v.serving is not None:
        return v.serving
    return serving_report(facts_from_summary(v.config or {}, v.summary or {}))


def describe_version(adapter: Adapter | AdapterRow, v: AdapterVersion | VersionRow, base_url: str = "",
                     view: InputsView | None = None, restrictive: Callable[[str | None], bool] | None = None
                     ) -> dict[str, Any]:
    """The JSON form of a version, with its files and their download URLs; ``view``: what the reader may
    see of a merged version's inputs (:mod:`.redaction`; None: a version with no parents); ``restrictive``
    (the settings' test) flags a base model's restrictive license."""
    root = f"{base_url}/api/v1/adapters/{adapter.namespace}/{adapter.name}/versions/{v.version}/files"
    view = view or InputsView()
    base = adapter.base_model
    return {
        "adapter": f"{adapter.namespace}/{adapter.name}",
        "version": v.version,
        "commit": v.commit,
        "config": v.config,
        "summary": v.summary,
        "parents": redact_parents(v.parents or [], view),
        "description": v.description,
        "metrics": (v.provenance or {}).get("metrics", {}),
        "params": (v.provenance or {}).get("params", {}),
        "dataset": (v.provenance or {}).get("dataset"),
        "created_by": v.created_by,
        "created_at": v.created_at.isoformat() if v.created_at else None,
        "yanked": yank_info(v),
        "files": [
            {"filename": f.filename, "size": f.size, "sha256": f.sha256, "url": f"{root}/{f.filename}"}
            for f in visible_files(v, view)
        ],
        "serving": serving_of(v),
        "merge_check": v.merge_check,
        "license": v.license,
        "base_model": {"name": f"{base.namespace}/{base.name}", "revision": base.revision,
                       "validated_revision": v.base_revision, "license": base.license,
                       "license_restrictive": bool(restrictive and restrictive(base.license))},
    }


__all__ = [
    "MAX_VERSION", "VERSION_NUMBER", "aliases_of", "describe_adapter", "describe_named", "describe_version",
    "find_version", "get_adapter", "get_named", "missing", "refuse_yanked", "resolve_version", "search",
    "search_words", "serving_of", "version_ref", "versions_of", "visible", "yank_info",
]
