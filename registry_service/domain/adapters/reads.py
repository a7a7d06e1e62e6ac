"""The hot read paths (a version by number, alias or commit; an adapter's versions): one joined Core
query each, answered as plain frozen structs instead of ORM objects.

They run on the app's reader engine (:func:`registry_service.db.session.make_reader`: autocommit, one
round trip per read). The visibility condition is part of every query, so nothing here can hand out a private version to
a caller who may not read it. The statements are built once per shape (reference kind × kind of
caller) with bound parameters, so a request only binds values. The structs carry the ORM rows' attribute
names, so the JSON forms, the yank rules (:mod:`.references`) and redaction (:mod:`.redaction`) are the
same functions for both.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import JSON, ColumnElement, Select, and_, bindparam, false, func, literal_column, or_, select, true
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncEngine

from ...db.models import Adapter, AdapterVersion, Alias, BaseModel, File
from ...db.session import read_once
from ...errors import NotFound
from ...names import check_part
from ..auth.tokens import Principal
from .references import MAX_VERSION, RefKind, missing, refuse_yanked, version_ref

A, V, F, B, L = (Adapter.__table__, AdapterVersion.__table__, File.__table__, BaseModel.__table__,
                 Alias.__table__)
Caller = Literal["admin", "anonymous", "namespace"]


class AdapterNotFound(NotFound):
    """No adapter ``ns/name`` that this caller may see."""


class VersionNotFound(NotFound):
    """The adapter exists (and is visible) but has no such version."""


@dataclass(frozen=True, slots=True)
class FileRow:
    """A file of a version."""

    filename: str
    size: int
    sha256: str
    storage_key: str


@dataclass(frozen=True, slots=True)
class BaseRef:
    """The base model an adapter fits."""

    namespace: str
    name: str
    fingerprint: str
    revision: str | None
    license: str | None


@dataclass(frozen=True, slots=True)
class AdapterRow:
    """An adapter as the read paths need it."""

    id: int
    namespace: str
    name: str
    method: str
    description: str
    tags: list[str]
    visibility: str
    next_version: int
    downloads: int
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    base_model: BaseRef


@dataclass(frozen=True, slots=True)
class VersionRow:
    """An immutable published version with its files (sorted by name)."""

    id: int
    version: int
    commit: str
    config: dict[str, Any]
    summary: dict[str, Any]
    parents: list[dict[str, Any]]
    created_by: str | None
    created_at: dt.datetime | None
    provenance: dict[str, Any]
    description: str | None
    merge_check: dict[str, Any] | None
    serving: dict[str, Any] | None
    base_revision: str | None
    license: str | None
    yanked_at: dt.datetime | None
    yanked_by: str | None
    yank_reason: str | None
    purged_at: dt.datetime | None
    files: tuple[FileRow, ...]


def ref_kind(ref: str | int | None) -> tuple[RefKind, str | int]:
    """How a reference names a version, and the value to look it up by (a number past the column's range
    looks up 0: no such version, asked cheaply, after the adapter's visibility)."""
    try:
        kind, ref_s = version_ref(ref, "")
    except NotFound:
        return "number", 0
    return kind, int(ref_s) if kind == "number" else ref_s


def caller_kind(principal: Principal) -> Caller:
    """Which visibility condition applies to ``principal``."""
    if principal.is_admin:
        return "admin"
    return "namespace" if principal.namespace and principal.scopes else "anonymous"


def visible_for(caller: Caller) -> ColumnElement[bool]:
    """SQL condition: adapters a caller of this kind may see, with the caller's namespace as the bound
    parameter ``caller_ns`` (:func:`caller_params`)."""
    if caller == "admin":
        return true()
    own = A.c.namespace == bindparam("caller_ns") if caller == "namespace" else false()
    return or_(A.c.visibility == "public", own)


def visible_to(principal: Principal) -> ColumnElement[bool]:
    """SQL condition: adapters ``principal`` may see (public ones, and private ones it can read), with
    the caller's namespace as the bound parameter ``caller_ns`` (:func:`caller_params`)."""
    return visible_for(caller_kind(principal))


def caller_params(principal: Principal) -> dict[str, Any]:
    """The bound parameters :func:`visible_to` needs."""
    return {"caller_ns": principal.namespace} if caller_kind(principal) == "namespace" else {}


#: The columns of an adapter (and its base model) that :func:`adapter_row` reads, in order.
ADAPTER_COLUMNS = (A.c.id, A.c.namespace, A.c.name, A.c.method, A.c.description, A.c.tags, A.c.visibility,
                   A.c.next_version, A.c.downloads, A.c.created_at, A.c.updated_at,
                   B.c.namespace, B.c.name, B.c.fingerprint, B.c.revision, B.c.license)
_VERSION_COLUMNS = (V.c.id, V.c.version, V.c.commit, V.c.config, V.c.summary, V.c.parents, V.c.created_by,
                    V.c.created_at, V.c.provenance, V.c.description, V.c.merge_check, V.c.serving, V.c.base_revision,
                    V.c.license, V.c.yanked_at, V.c.yanked_by, V.c.yank_reason, V.c.purged_at)
_AT_VERSION = len(ADAPTER_COLUMNS)  # where a version's columns start after an adapter's


def _files_json(version_id: Any = V.c.id) -> Any:
    """The files of version ``version_id`` (a column) as one JSON array of ``[filename, size, sha256,
    storage_key]``, by name."""
    row = func.json_build_array(F.c.filename, F.c.size, F.c.sha256, F.c.storage_key)
    agg = func.coalesce(func.json_agg(aggregate_order_by(row, F.c.filename)), literal_column("'[]'::json"))
    return select(agg).where(F.c.version_id == version_id).scalar_subquery().cast(JSON)


@functools.cache
def version_statement(kind: RefKind, caller: Caller) -> Select[Any]:
    """adapter ⟕ version by ``kind``: no row when the adapter is missing or hidden, a row without a
    version when the reference names none."""
    base = A.join(B, B.c.id == A.c.base_model_id)
    if kind == "alias":
        joined = base.outerjoin(L, and_(L.c.adapter_id == A.c.id, L.c.name == bindparam("ref"))).outerjoin(
            V, V.c.id == L.c.version_id)
    else:
        column = V.c.version if kind == "number" else V.c.commit
        joined = base.outerjoin(V, and_(V.c.adapter_id == A.c.id, column == bindparam("ref")))
    return (select(*ADAPTER_COLUMNS, *_VERSION_COLUMNS, _files_json()).select_from(joined)
            .where(A.c.namespace == bindparam("ns"), A.c.name == bindparam("name"), visible_for(caller)))


def _aliases_json() -> Select[Any]:
    """The adapter's aliases as one JSON object (alias -> version number), as a one-row select."""
    return (select(func.coalesce(func.json_object_agg(L.c.name, V.c.version), literal_column("'{}'::json"))
                   .label("aliases"))
            .select_from(L.join(V, V.c.id == L.c.version_id)).where(L.c.adapter_id == A.c.id))


@functools.cache
def adapter_statement(caller: Caller) -> Select[Any]:
    """The adapter ``ns/name`` if visible, with its aliases as a JSON object (alias -> version number)."""
    return (select(*ADAPTER_COLUMNS, _aliases_json().scalar_subquery().cast(JSON))
            .select_from(A.join(B, B.c.id == A.c.base_model_id))
            .where(A.c.namespace == bindparam("ns"), A.c.name == bindparam("name"), visible_for(caller)))


@functools.cache
def adapter_versions_statement(caller: Caller) -> Select[Any]:
    """The adapter ``ns/name`` if visible, with its aliases, joined with its newest ``limit`` versions of
    number ``upto`` or below (and their files), newest first: one row per version, or one row without a
    version when there is none."""
    aliases = _aliases_json().lateral("adapter_aliases")
    versions = (select(V).where(V.c.adapter_id == A.c.id, V.c.version <= bindparam("upto"))
                .order_by(V.c.version.desc()).limit(bindparam("limit")).lateral("v"))
    files = _files_json(versions.c.id)
    joined = A.join(B, B.c.id == A.c.base_model_id).join(aliases, true()).outerjoin(versions, true())
    columns = (versions.c[c.name] for c in _VERSION_COLUMNS)
    return (select(*ADAPTER_COLUMNS, aliases.c.aliases.cast(JSON), *columns, files).select_from(joined)
            .where(A.c.namespace == bindparam("ns"), A.c.name == bindparam("name"), visible_for(caller))
            .order_by(versions.c.version.desc()))


def _params(principal: Principal, ns: str, name: str) -> dict[str, Any]:
    check_part(ns, "namespace")
    check_part(name, "adapter name")
    return {"ns": ns, "name": name, **caller_params(principal)}


def adapter_row(row: Any) -> AdapterRow:
    """An :class:`AdapterRow` from a row that starts with :data:`ADAPTER_COLUMNS`."""
    return AdapterRow(row[0], row[1], row[2], row[3], row[4], list(row[5] or []), row[6], row[7], int(row[8] or 0),
                      row[9], row[10], BaseRef(row[11], row[12], row[13], row[14], row[15]))


def _version(row: Any, at: int) -> VersionRow:
    files = tuple(FileRow(f[0], int(f[1]), f[2], f[3]) for f in row[at + len(_VERSION_COLUMNS)])
    v = row[at:at + len(_VERSION_COLUMNS)]
    return VersionRow(v[0], v[1], v[2], v[3], v[4], v[5] or [], v[6], v[7], v[8] or {}, *v[9:], files=files)


async def read_version(reader: AsyncEngine, principal: Principal, ns: str, name: str, ref: str | int | None, *,
                       yanked_ok: bool = False) -> tuple[AdapterRow, VersionRow]:
    """A version of ``ns/name`` by number, alias (``latest`` when ``ref`` is None) or commit, in one
    query; :class:`AdapterNotFound` or :class:`VersionNotFound` (both 404) otherwise, and 410 Gone as
    :func:`.references.missing` and :func:`.references.refuse_yanked` say."""
    params = _params(principal, ns, name)
    kind, params["ref"] = ref_kind(ref)
    rows = await read_once(reader, version_statement(kind, caller_kind(principal)), params)
    row = rows[0] if rows else None
    if row is None:
        raise AdapterNotFound(f"adapter {ns}/{name} not found")
    adapter = adapter_row(row)
    if row[_AT_VERSION] is None:
        raise missing(f"{ns}/{name}", ref, adapter.next_version, VersionNotFound)
    version = _version(row, _AT_VERSION)
    refuse_yanked(f"{ns}/{name}", version, yanked_ok)
    return adapter, version


async def read_adapter(reader: AsyncEngine, principal: Principal, ns: str, name: str
                       ) -> tuple[AdapterRow, dict[str, int]]:
    """The adapter ``ns/name`` and its aliases, in one query; :class:`AdapterNotFound` otherwise."""
    rows = await read_once(reader, adapter_statement(caller_kind(principal)), _params(principal, ns, name))
    row = rows[0] if rows else None
    if row is None:
        raise AdapterNotFound(f"adapter {ns}/{name} not found")
    return adapter_row(row), dict(sorted(row[_AT_VERSION].items()))


def _upto(before: int | None) -> int:
    return MAX_VERSION if before is None else min(before - 1, MAX_VERSION)


async def read_adapter_versions(reader: AsyncEngine, principal: Principal, ns: str, name: str, *, limit: int,
                                before: int | None = None) -> tuple[AdapterRow, dict[str, int], list[VersionRow]]:
    """The adapter ``ns/name``, its aliases and its newest ``limit`` versions below number ``before`` (all when
    None), newest first, in one query; :class:`AdapterNotFound` otherwise."""
    params = _params(principal, ns, name) | {"limit": limit, "upto": _upto(before)}
    rows = await read_once(reader, adapter_versions_statement(caller_kind(principal)), params)
    if not rows:
        raise AdapterNotFound(f"adapter {ns}/{name} not found")
    at = _AT_VERSION + 1  # after the aliases
    versions = [_version(row, at) for row in rows if row[at] is not None]
    return adapter_row(rows[0]), dict(sorted(rows[0][_AT_VERSION].items())), versions


__all__ = [
    "ADAPTER_COLUMNS",
    "AdapterNotFound",
    "AdapterRow",
    "BaseRef",
    "FileRow",
    "VersionNotFound",
    "VersionRow",
    "adapter_row",
    "adapter_statement",
    "adapter_versions_statement",
    "caller_kind",
    "caller_params",
    "read_adapter",
    "read_adapter_versions",
    "read_version",
    "ref_kind",
    "version_statement",
    "visible_for",
    "visible_to",
]
