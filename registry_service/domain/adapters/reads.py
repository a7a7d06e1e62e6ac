"""The hot read paths (a version by number, alias or commit; an adapter's versions): one joined Core
query each, answered as plain frozen structs instead of ORM objects.

They run on the app's reader engine (:func:`registry_service.db.session.make_reader`: autocommit, one
round trip per read). The visibility condition is part of every query, so nothing here can hand out a private version to
a caller who may not read it. The statements are built once per shape (reference kind × kind of
caller) with bound parameters, so a request only binds values.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Unpack

from sqlalchemy import JSON, Row, Select, and_, bindparam, false, func, literal_column, or_, select, true, tuple_
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ...db.models import Adapter, AdapterVersion, Alias, BaseModel, File
from ...db.session import read_once
from ...errors import BadRequest, NotFound
from ...names import COMMIT, check_part
from ..auth.tokens import Principal

#: A version reference that is a number (at most 19 ASCII digits, so int() is cheap) …
VERSION_NUMBER = re.compile(r"^[0-9]{1,19}\Z")
#: … and the largest version number there can be (``adapter_version.version`` is a 32-bit integer).
MAX_VERSION = 2**31 - 1
#: Search counts matches up to this many (``total_exact`` false beyond): a count is a scan of them all.
MAX_COUNTED = 1_000

A, V, F, B, L = (Adapter.__table__, AdapterVersion.__table__, File.__table__, BaseModel.__table__,
                 Alias.__table__)
RefKind = Literal["number", "commit", "alias"]
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
    files: tuple[FileRow, ...]


def ref_kind(ref: str) -> tuple[RefKind, str | int]:
    """How a reference names a version, and the value to look it up by (404 for a number past the
    column's range)."""
    if VERSION_NUMBER.match(ref):  # ASCII digits only: '²' is a digit to str.isdigit, not to int()
        number = int(ref)
        return "number", number if number <= MAX_VERSION else 0  # 0: no such version, asked cheaply
    if COMMIT.match(ref):
        return "commit", ref
    return "alias", ref


def caller_kind(principal: Principal) -> Caller:
    """Which visibility condition applies to ``principal``."""
    if principal.is_admin:
        return "admin"
    return "namespace" if principal.namespace and principal.scopes else "anonymous"


def _visible(caller: Caller) -> Any:
    if caller == "admin":
        return true()
    own = A.c.namespace == bindparam("caller_ns") if caller == "namespace" else false()
    return or_(A.c.visibility == "public", own)


_ADAPTER_COLUMNS = (A.c.id, A.c.namespace, A.c.name, A.c.method, A.c.description, A.c.tags, A.c.visibility,
                    A.c.next_version, A.c.created_at, A.c.updated_at, B.c.namespace, B.c.name, B.c.fingerprint)


def _files_json() -> Any:
    """The version's files as one JSON array of ``[filename, size, sha256, storage_key]``, by name."""
    row = func.json_build_array(F.c.filename, F.c.size, F.c.sha256, F.c.storage_key)
    agg = func.coalesce(func.json_agg(aggregate_order_by(row, F.c.filename)), literal_column("'[]'::json"))
    return select(agg).where(F.c.version_id == V.c.id).scalar_subquery().cast(JSON)


_VERSION_COLUMNS = (V.c.id, V.c.version, V.c.commit, V.c.config, V.c.summary, V.c.parents, V.c.created_by,
                    V.c.created_at)


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
    return (select(*_ADAPTER_COLUMNS, *_VERSION_COLUMNS, _files_json()).select_from(joined)
            .where(A.c.namespace == bindparam("ns"), A.c.name == bindparam("name"), _visible(caller)))


@functools.cache
def adapter_statement(caller: Caller) -> Select[Any]:
    """The adapter ``ns/name`` if visible, with its aliases as a JSON object (alias -> version number)."""
    aliases = (select(func.coalesce(func.json_object_agg(L.c.name, V.c.version), literal_column("'{}'::json")))
               .select_from(L.join(V, V.c.id == L.c.version_id)).where(L.c.adapter_id == A.c.id)
               .scalar_subquery().cast(JSON))
    return (select(*_ADAPTER_COLUMNS, aliases).select_from(A.join(B, B.c.id == A.c.base_model_id))
            .where(A.c.namespace == bindparam("ns"), A.c.name == bindparam("name"), _visible(caller)))


@functools.cache
def versions_statement() -> Select[Any]:
    """An adapter's versions with their files, newest first: at most ``limit`` of number ``upto`` or below."""
    return (select(*_VERSION_COLUMNS, _files_json()).where(V.c.adapter_id == bindparam("adapter_id"),
                                                           V.c.version <= bindparam("upto"))
            .order_by(V.c.version.desc()).limit(bindparam("limit")))


def _params(principal: Principal, ns: str, name: str) -> dict[str, Any]:
    check_part(ns, "namespace")
    check_part(name, "adapter name")
    params: dict[str, Any] = {"ns": ns, "name": name}
    if caller_kind(principal) == "namespace":
        params["caller_ns"] = principal.namespace
    return params


def _adapter(row: Any) -> AdapterRow:
    return AdapterRow(row[0], row[1], row[2], row[3], row[4], list(row[5] or []), row[6], row[7], row[8], row[9],
                      BaseRef(row[10], row[11], row[12]))


def _version(row: Any, at: int) -> VersionRow:
    files = tuple(FileRow(f[0], int(f[1]), f[2], f[3]) for f in row[at + 8])
    return VersionRow(row[at], row[at + 1], row[at + 2], row[at + 3], row[at + 4], row[at + 5] or [], row[at + 6],
                      row[at + 7], files)


async def read_version(reader: AsyncEngine, principal: Principal, ns: str, name: str,
                       ref: str | int | None) -> tuple[AdapterRow, VersionRow]:
    """A version of ``ns/name`` by number, alias (``latest`` when ``ref`` is None) or commit, in one
    query; :class:`AdapterNotFound` or :class:`VersionNotFound` (both 404) otherwise."""
    ref_s = "latest" if ref is None or ref == "" else str(ref)
    params = _params(principal, ns, name)
    kind, params["ref"] = ref_kind(ref_s)
    rows = await read_once(reader, version_statement(kind, caller_kind(principal)), params)
    row = rows[0] if rows else None
    if row is None:
        raise AdapterNotFound(f"adapter {ns}/{name} not found")
    if row[13] is None:
        raise VersionNotFound(f"{ns}/{name} has no version {ref_s!r}")
    return _adapter(row), _version(row, 13)


async def read_adapter(reader: AsyncEngine, principal: Principal, ns: str, name: str
                       ) -> tuple[AdapterRow, dict[str, int]]:
    """The adapter ``ns/name`` and its aliases, in one query; :class:`AdapterNotFound` otherwise."""
    rows = await read_once(reader, adapter_statement(caller_kind(principal)), _params(principal, ns, name))
    row = rows[0] if rows else None
    if row is None:
        raise AdapterNotFound(f"adapter {ns}/{name} not found")
    return _adapter(row), dict(sorted(row[13].items()))


async def read_versions(reader: AsyncEngine, adapter: AdapterRow, *, limit: int,
                        before: int | None = None) -> list[VersionRow]:
    """The adapter's newest ``limit`` versions below number ``before`` (all when None), newest first."""
    upto = MAX_VERSION if before is None else min(before - 1, MAX_VERSION)
    rows = await read_once(reader, versions_statement(), {"adapter_id": adapter.id, "limit": limit, "upto": upto})
    return [_version(row, 0) for row in rows]


@dataclass(frozen=True, slots=True)
class SearchPage:
    """A page of adapters; ``next_cursor`` continues after its last one while ``has_more``. ``total``
    counts the matches up to :data:`MAX_COUNTED` (``total_exact`` says whether that is all)."""

    items: list[AdapterRow]
    total: int
    total_exact: bool
    has_more: bool
    next_cursor: str | None


def encode_cursor(updated_at: dt.datetime, ident: int) -> str:
    """The opaque cursor after the adapter (``updated_at``, ``ident``) in the (updated_at DESC, id DESC) order."""
    return base64.urlsafe_b64encode(f"{updated_at.isoformat()}|{ident}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """(updated_at, id) of a cursor; 400 when it is not one this service gave out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, ident = raw.partition("|")
        at, number = dt.datetime.fromisoformat(when), int(ident)
        if at.tzinfo is None or not 0 < number <= MAX_VERSION:
            raise ValueError(raw)
        return at, number
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise BadRequest(f"cursor {cursor[:80]!r} is not a cursor of this listing; pass next_cursor as given") from exc


async def _rows(db: AsyncSession | AsyncEngine, statement: Any, params: dict[str, Any] | None = None) -> list[Row[Any]]:
    if isinstance(db, AsyncEngine):
        return await read_once(db, statement, params or {})
    return list(await (await db.connection()).execute(statement, params or {}))


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class SearchFilters(TypedDict, total=False):
    """What a search can be narrowed and paged by (every one optional)."""

    base_model: str | None
    fingerprint: str | None
    method: str | None
    tag: str | None
    q: str | None
    page: int
    page_size: int
    cursor: str | None


async def search_adapters(db: AsyncSession | AsyncEngine, principal: Principal, *, count: bool = True,
                          **filters: Unpack[SearchFilters]) -> SearchPage:
    """Adapters matching every given filter, newest first (updated_at, then id: a stable order).
    ``cursor`` (a previous page's ``next_cursor``) continues by keyset; without it ``page`` picks a
    page by offset. ``count``: also count the matches (up to :data:`MAX_COUNTED`)."""
    base_model, fingerprint, method = filters.get("base_model"), filters.get("fingerprint"), filters.get("method")
    tag, q, cursor = filters.get("tag"), filters.get("q"), filters.get("cursor")
    page, page_size = filters.get("page", 1), filters.get("page_size", 20)
    conds: list[Any] = [_visible(caller_kind(principal))]
    params: dict[str, Any] = {"caller_ns": principal.namespace} if caller_kind(principal) == "namespace" else {}
    if base_model:
        ns, _, name = base_model.partition("/")
        conds.append(A.c.base_model_id == select(B.c.id).where(B.c.namespace == ns, B.c.name == name)
                     .scalar_subquery())
    if fingerprint:
        conds.append(A.c.base_model_id.in_(select(B.c.id).where(B.c.fingerprint == fingerprint)))
    if method:
        conds.append(A.c.method == method.upper())
    if tag:
        conds.append(A.c.tags.contains([tag]))
    if q:
        like = _like(q)
        conds.append(or_(A.c.name.ilike(like, escape="\\"), A.c.namespace.ilike(like, escape="\\"),
                         A.c.description.ilike(like, escape="\\")))
    stmt = select(*_ADAPTER_COLUMNS).select_from(A.join(B, B.c.id == A.c.base_model_id)).where(*conds)
    if cursor:
        at, ident = decode_cursor(cursor)
        stmt = stmt.where(tuple_(A.c.updated_at, A.c.id) < tuple_(at, ident))
    else:
        stmt = stmt.offset((max(page, 1) - 1) * page_size)
    rows = await _rows(db, stmt.order_by(A.c.updated_at.desc(), A.c.id.desc()).limit(page_size + 1), params)
    items = [_adapter(r) for r in rows[:page_size]]
    more = len(rows) > page_size
    total, exact = 0, True
    if count:
        counted = select(A.c.id).where(*conds).limit(MAX_COUNTED + 1).subquery()
        total = (await _rows(db, select(func.count()).select_from(counted), params))[0][0]
        total, exact = min(total, MAX_COUNTED), total <= MAX_COUNTED
    last = items[-1] if more and items else None
    return SearchPage(items, total, exact, more,
                      encode_cursor(last.updated_at, last.id) if last and last.updated_at else None)


__all__ = [
    "MAX_COUNTED",
    "MAX_VERSION",
    "VERSION_NUMBER",
    "AdapterNotFound",
    "AdapterRow",
    "BaseRef",
    "FileRow",
    "SearchPage",
    "VersionNotFound",
    "VersionRow",
    "adapter_statement",
    "caller_kind",
    "decode_cursor",
    "encode_cursor",
    "read_adapter",
    "read_version",
    "read_versions",
    "ref_kind",
    "search_adapters",
    "version_statement",
    "versions_statement",
]
