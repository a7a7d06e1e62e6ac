"""Reading adapters: visibility, version references, search, and their JSON forms."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, exists, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from sdk.serving_compat import facts_from_summary, serving_report

from ...db.models import Adapter, AdapterVersion, Alias, BaseModel
from ...errors import Gone, NotFound
from ...names import COMMIT, check_part
from ..auth.tokens import Principal
from .redaction import InputsView, redact_parents, visible_files

#: A version reference that is a number (at most 19 ASCII digits, so int() is cheap) …
VERSION_NUMBER = re.compile(r"^[0-9]{1,19}\Z")
#: … and the largest version number there can be (``adapter_version.version`` is a 32-bit integer).
MAX_VERSION = 2**31 - 1
#: Search text: at most this many words are used, each cut to this many characters.
MAX_SEARCH_WORDS = 8
MAX_WORD_CHARS = 64
#: Orders a search can be sorted in: name -> ORDER BY columns.
SORTS = {
    "updated": (Adapter.updated_at.desc(), Adapter.id.desc()),
    "name": (Adapter.namespace, Adapter.name),
    "created": (Adapter.created_at.desc(), Adapter.id.desc()),
    "downloads": (Adapter.downloads.desc(), Adapter.id.desc()),
}


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


def version_ref(ref: str | int | None, owner: str) -> tuple[str, str]:
    """What a version reference is: ``("number", digits)``, ``("commit", hex)`` or ``("alias", name)``
    (``latest`` when ``ref`` is None); a number past the column's range is not found, without asking."""
    ref_s = "latest" if ref is None or ref == "" else str(ref)
    if VERSION_NUMBER.match(ref_s):  # ASCII digits only: '²' is a digit to str.isdigit, not to int()
        if int(ref_s) > MAX_VERSION:
            raise NotFound(f"{owner} has no version {ref_s!r}")
        return "number", ref_s
    return ("commit" if COMMIT.match(ref_s) else "alias"), ref_s


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
    try:
        row = await find_version(db, ref, f"{adapter.namespace}/{adapter.name}", AdapterVersion, Alias,
                                 "adapter_id", adapter.id)
    except NotFound:
        if (ref is None or ref in ("", "latest")) and adapter.next_version > 1:
            raise Gone(f"every version of {adapter.namespace}/{adapter.name} is yanked or purged") from None
        raise
    if row.yanked_at is not None and not yanked_ok:
        why = row.yank_reason or "no reason given"
        raise Gone(f"{adapter.namespace}/{adapter.name}@{row.version} was yanked: {why}",
                   extra={"version": row.version, "yanked": yank_info(row)})
    return row


def yank_info(v: AdapterVersion) -> dict[str, Any] | None:
    """When, by whom and why a version was yanked (and whether its files were purged); None if it was not."""
    if v.yanked_at is None:
        return None
    return {"at": v.yanked_at.isoformat(), "by": v.yanked_by, "reason": v.yank_reason or "",
            "purged": v.purged_at is not None}


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


async def search(
    db: AsyncSession,
    principal: Principal,
    *,
    base_model: str | None = None,
    fingerprint: str | None = None,
    method: str | None = None,
    tag: str | None = None,
    q: str | None = None,
    page: int = 1,
    page_size: int = 20,
    namespace: str | None = None,
    sort: str = "updated",
    serves: str | None = None,
    max_lora_rank: int | None = None,
) -> tuple[list[Adapter], int]:
    """Adapters matching every given filter, with the total count; newest first, or in another of
    :data:`SORTS`. ``q``'s words must each appear (any order, any case) in the name, namespace,
    description, a tag, or the base model's name. ``serves`` (an engine of
    :data:`sdk.serving_compat.ENGINES`) and ``max_lora_rank`` (vLLM's ``--max-lora-rank``) filter on the
    serving report of the adapter's latest version."""
    stmt = select(Adapter).join(BaseModel, BaseModel.id == Adapter.base_model_id).where(visible(principal))
    if base_model:
        ns, _, name = base_model.partition("/")
        stmt = stmt.where(BaseModel.namespace == ns, BaseModel.name == name)
    if fingerprint:
        stmt = stmt.where(BaseModel.fingerprint == fingerprint)
    if method:
        stmt = stmt.where(Adapter.method == method.upper())
    if tag:
        stmt = stmt.where(Adapter.tags.contains([tag]))
    if namespace:
        stmt = stmt.where(Adapter.namespace == namespace)
    for condition in text_conditions(q):
        stmt = stmt.where(condition)
    if serves or max_lora_rank is not None:
        stmt = stmt.where(_serving_filter(serves, max_lora_rank))
    total = (await db.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
    page = max(page, 1)
    order = SORTS.get(sort, SORTS["updated"])
    rows = (
        await db.execute(stmt.order_by(*order).limit(page_size).offset((page - 1) * page_size))
    ).unique().scalars()
    return list(rows), total


def search_words(q: str | None) -> list[str]:
    """The words of a search text (at most :data:`MAX_SEARCH_WORDS`, each cut to :data:`MAX_WORD_CHARS`)."""
    return [w[:MAX_WORD_CHARS] for w in (q or "").split()[:MAX_SEARCH_WORDS]]


def text_conditions(q: str | None) -> list[ColumnElement[bool]]:
    """One SQL condition per word of ``q``: the word (``%`` and ``_`` taken literally) appears, in any case,
    in the adapter's name, namespace, description or tags, or in its base model's ``ns/name``."""
    out = []
    for word in search_words(q):
        like = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        fields = (Adapter.name, Adapter.namespace, Adapter.description, func.array_to_string(Adapter.tags, " "),
                  BaseModel.namespace + "/" + BaseModel.name)
        out.append(or_(*(f.ilike(like, escape="\\") for f in fields)))
    return out


def _serving_filter(serves: str | None, max_lora_rank: int | None) -> ColumnElement[bool]:
    """SQL condition: the adapter's latest version loads on ``serves`` and needs vLLM's ``--max-lora-rank``
    at most ``max_lora_rank`` (which implies vLLM)."""
    latest = (select(AdapterVersion.id).join(Alias, Alias.version_id == AdapterVersion.id)
              .where(Alias.adapter_id == Adapter.id, Alias.name == "latest"))
    conditions = [AdapterVersion.id.in_(latest.scalar_subquery())]
    engines = [e for e in (serves, "vllm" if max_lora_rank is not None else None) if e]
    if engines:
        conditions.append(AdapterVersion.serves.contains(engines))
    if max_lora_rank is not None:
        conditions.append(AdapterVersion.max_lora_rank <= max_lora_rank)
    return exists(select(AdapterVersion.id).where(AdapterVersion.adapter_id == Adapter.id, *conditions))


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


def describe_adapter(row: Adapter, aliases: dict[str, int] | None = None) -> dict[str, Any]:
    """The JSON form of an adapter."""
    return describe_named(row, aliases, base_model_fingerprint=row.base_model.fingerprint, method=row.method,
                          tags=list(row.tags or []))


def serving_of(v: AdapterVersion) -> dict[str, Any]:
    """The version's serving-compatibility report (computed from its config and summary if none was stored)."""
    if v.serving is not None:
        return v.serving
    return serving_report(facts_from_summary(v.config or {}, v.summary or {}))


def describe_version(adapter: Adapter, v: AdapterVersion, base_url: str = "",
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
