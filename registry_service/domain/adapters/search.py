"""Searching adapters in one Core query into plain structs (:class:`.reads.AdapterRow`): filters by base
model, signature, method, tag, namespace, words and what serves the latest version; sorted; paged by
offset or, in the default order, by keyset cursor; counted up to a bound (or exactly, for the pages)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from sqlalchemy import ColumnElement, Row, any_, exists, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ...db.models import Adapter, AdapterVersion, Alias, BaseModel
from ...db.session import read_once
from ...errors import BadRequest
from ..auth.tokens import Principal
from .reads import ADAPTER_COLUMNS, AdapterRow, adapter_row, caller_params, visible_to
from .references import MAX_VERSION

#: Search counts matches up to this many (``total_exact`` false beyond): a count is a scan of them all.
MAX_COUNTED = 1_000
#: Search text: at most this many words are used, each cut to this many characters.
MAX_SEARCH_WORDS = 8
MAX_WORD_CHARS = 64
#: Orders a search can be sorted in: name -> ORDER BY columns. Cursors follow the default, ``updated``.
SORTS = {
    "updated": (Adapter.updated_at.desc(), Adapter.id.desc()),
    "name": (Adapter.namespace, Adapter.name),
    "created": (Adapter.created_at.desc(), Adapter.id.desc()),
    "downloads": (Adapter.downloads.desc(), Adapter.id.desc()),
}


@dataclass(frozen=True, slots=True)
class SearchPage:
    """A page of adapters; ``next_cursor`` continues after its last one while ``has_more``. ``total``
    counts the matches up to the bound asked for (``total_exact`` says whether that is all); None when
    they were not counted."""

    items: list[AdapterRow]
    total: int | None
    total_exact: bool
    has_more: bool
    next_cursor: str | None


class SearchFilters(TypedDict, total=False):
    """What a search can be narrowed, sorted and paged by (every one optional)."""

    base_model: str | None
    fingerprint: str | None
    method: str | None
    tag: str | None
    q: str | None
    namespace: str | None
    serves: str | None
    max_lora_rank: int | None
    sort: str
    page: int
    page_size: int
    cursor: str | None


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


def search_words(q: str | None) -> list[str]:
    """The words of a search text (at most :data:`MAX_SEARCH_WORDS`, each cut to :data:`MAX_WORD_CHARS`)."""
    return [w[:MAX_WORD_CHARS] for w in (q or "").split()[:MAX_SEARCH_WORDS]]


def text_conditions(q: str | None) -> list[ColumnElement[bool]]:
    """One SQL condition per word of ``q``: the word (``%`` and ``_`` taken literally) appears, in any case,
    in the adapter's name, namespace, description or tags, or in its base model's ``ns/name``.

    Every arm is on the adapter's own row, so that trigram indexes (migrations 0008 and 0013, where
    ``pg_trgm`` exists) can serve them all: the tags through ``adapter_tags_text`` (an indexable
    ``array_to_string``), the base model as ``base_model_id = ANY(the matching base models)``."""
    out = []
    bm = BaseModel.__table__.alias("text_bm")
    for word in search_words(q):
        like = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        matching = (bm.c.namespace + "/" + bm.c.name).ilike(like, escape="\\")
        # cast: ANY of an array (an index condition), not ANY of a subquery (a filter run on every row)
        base_models = select(func.array_agg(bm.c.id)).where(matching).scalar_subquery().cast(ARRAY(bm.c.id.type))
        fields = (Adapter.name, Adapter.namespace, Adapter.description, func.adapter_tags_text(Adapter.tags))
        out.append(or_(*(f.ilike(like, escape="\\") for f in fields), Adapter.base_model_id == any_(base_models)))
    return out


def serving_filter(serves: str | None, max_lora_rank: int | None) -> ColumnElement[bool]:
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


def conditions_of(principal: Principal, filters: SearchFilters) -> list[ColumnElement[bool]]:
    """The WHERE conditions (on adapter ⋈ base_model) of a search for ``principal``."""
    conds: list[Any] = [visible_to(principal)]
    # the base model as ids of the adapter's own column, so that the per-base-model keyset index serves the
    # page (looked up in an alias of base_model: the joined one would correlate)
    bm = BaseModel.__table__.alias("bm")
    if base_model := filters.get("base_model"):
        ns, _, name = base_model.partition("/")
        conds.append(Adapter.base_model_id == select(bm.c.id).where(bm.c.namespace == ns, bm.c.name == name)
                     .scalar_subquery())
    if fingerprint := filters.get("fingerprint"):
        conds.append(Adapter.base_model_id.in_(select(bm.c.id).where(bm.c.fingerprint == fingerprint)))
    if method := filters.get("method"):
        conds.append(Adapter.method == method.upper())
    if tag := filters.get("tag"):
        conds.append(Adapter.tags.contains([tag]))
    if namespace := filters.get("namespace"):
        conds.append(Adapter.namespace == namespace)
    conds += text_conditions(filters.get("q"))
    serves, rank = filters.get("serves"), filters.get("max_lora_rank")
    if serves or rank is not None:
        conds.append(serving_filter(serves, rank))
    return conds


async def _rows(db: AsyncSession | AsyncEngine, statement: Any, params: dict[str, Any]) -> list[Row[Any]]:
    if isinstance(db, AsyncEngine):
        return await read_once(db, statement, params)
    return list(await (await db.connection()).execute(statement, params))


async def search_adapters(db: AsyncSession | AsyncEngine, principal: Principal, *, count_upto: int | None = MAX_COUNTED,
                          **filters: Unpack[SearchFilters]) -> SearchPage:
    """Adapters matching every given filter, newest first (updated_at, then id: a stable order) or in
    another of :data:`SORTS`. ``cursor`` (a previous page's ``next_cursor``, default order only) continues
    by keyset; without it ``page`` picks a page by offset. The matches are counted up to ``count_upto``
    (0: not counted, ``total`` None; None: all of them); a last page by offset needs no count."""
    sort, cursor = filters.get("sort") or "updated", filters.get("cursor")
    if sort not in SORTS:
        raise BadRequest(f"sort {sort[:40]!r} is not one of {', '.join(SORTS)}")
    page, page_size = max(filters.get("page", 1), 1), filters.get("page_size", 20)
    conds, params = conditions_of(principal, filters), caller_params(principal)
    joined = Adapter.__table__.join(BaseModel.__table__, BaseModel.id == Adapter.base_model_id)
    stmt = select(*ADAPTER_COLUMNS).select_from(joined).where(*conds)
    if cursor:
        if sort != "updated":
            raise BadRequest(f"a cursor pages the default order only; page sort={sort} by page")
        at, ident = decode_cursor(cursor)
        stmt = stmt.where(tuple_(Adapter.updated_at, Adapter.id) < tuple_(at, ident))
    else:
        stmt = stmt.offset((page - 1) * page_size)
    rows = await _rows(db, stmt.order_by(*SORTS[sort]).limit(page_size + 1), params)
    items = [adapter_row(r) for r in rows[:page_size]]
    more = len(rows) > page_size
    total: int | None = None
    exact = False
    if not more and not cursor and (items or page == 1):  # the last page by offset: no match comes after it
        total, exact = (page - 1) * page_size + len(items), True
    elif count_upto != 0:
        counted = select(Adapter.id).select_from(joined).where(*conds)
        if count_upto is not None:
            counted = counted.limit(count_upto + 1)
        total = (await _rows(db, select(func.count()).select_from(counted.subquery()), params))[0][0]
        exact = count_upto is None or total <= count_upto
        total = total if exact else count_upto
    last = items[-1] if more and items and sort == "updated" else None
    return SearchPage(items, total, exact, more,
                      encode_cursor(last.updated_at, last.id) if last and last.updated_at else None)


__all__ = [
    "MAX_COUNTED", "MAX_SEARCH_WORDS", "MAX_WORD_CHARS", "SORTS", "SearchFilters", "SearchPage", "conditions_of",
    "decode_cursor", "encode_cursor", "search_adapters", "search_words", "serving_filter", "text_conditions",
]
