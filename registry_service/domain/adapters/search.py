"""Searching adapters in one Core query into plain structs (:class:`.reads.AdapterRow`): filters by base
model, signature, method, tag, namespace, words and what serves the latest version; sorted; paged by
offset or, in the default order, by keyset cursor; counted up to a bound (or exactly, for the pages)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from sqlalchemy import ColumnElement, Integer, Row, Select, String, any_, bindparam, exists, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ...db.models import Adapter, AdapterVersion, Alias, BaseModel
from ...db.session import read_once
from ...errors import BadRequest
from ..auth.tokens import Principal
from .reads import ADAPTER_COLUMNS, AdapterRow, Caller, adapter_row, caller_kind, caller_params, visible_for
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


def _like(word: str) -> str:
    """The ILIKE pattern of a search word (``%`` and ``_`` taken literally)."""
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def text_conditions(words: int) -> list[ColumnElement[bool]]:
    """One SQL condition per word (bound as ``word0``, ``word1``, … : :func:`_like` patterns): the word
    appears, in any case, in the adapter's name, namespace, description or tags, or in its base model's
    ``ns/name``.

    Every arm is on the adapter's own row, so that trigram indexes (migrations 0008 and 0013, where
    ``pg_trgm`` exists) can serve them all: the tags through ``adapter_tags_text`` (an indexable
    ``array_to_string``), the base model as ``base_model_id = ANY(the matching base models)``."""
    out = []
    bm = BaseModel.__table__.alias("text_bm")
    for i in range(words):
        like = bindparam(f"word{i}", type_=String())
        matching = (bm.c.namespace + "/" + bm.c.name).ilike(like, escape="\\")
        # cast: ANY of an array (an index condition), not ANY of a subquery (a filter run on every row)
        base_models = select(func.array_agg(bm.c.id)).where(matching).scalar_subquery().cast(ARRAY(bm.c.id.type))
        fields = (Adapter.name, Adapter.namespace, Adapter.description, func.adapter_tags_text(Adapter.tags))
        out.append(or_(*(f.ilike(like, escape="\\") for f in fields), Adapter.base_model_id == any_(base_models)))
    return out


def serving_filter(engines: bool, rank: bool) -> ColumnElement[bool]:
    """SQL condition: the adapter's latest version loads on every engine of the bound ``engines``
    (``engines``) and needs vLLM's ``--max-lora-rank`` at most the bound ``max_lora_rank`` (``rank``)."""
    latest = (select(AdapterVersion.id).join(Alias, Alias.version_id == AdapterVersion.id)
              .where(Alias.adapter_id == Adapter.id, Alias.name == "latest"))
    conditions = [AdapterVersion.id.in_(latest.scalar_subquery())]
    if engines:
        conditions.append(AdapterVersion.serves.contains(bindparam("engines", type_=AdapterVersion.serves.type)))
    if rank:
        conditions.append(AdapterVersion.max_lora_rank <= bindparam("max_lora_rank", type_=Integer()))
    return exists(select(AdapterVersion.id).where(AdapterVersion.adapter_id == Adapter.id, *conditions))


@dataclass(frozen=True, slots=True)
class Shape:
    """What a search's statement depends on (its values are bound parameters, :func:`search_params`): the
    kind of caller, which filters are given, how many words, the order, and whether it pages by cursor."""

    caller: Caller
    base_model: bool = False
    fingerprint: bool = False
    method: bool = False
    tag: bool = False
    namespace: bool = False
    words: int = 0
    serving: bool = False
    engines: bool = False
    rank: bool = False
    sort: str = "updated"
    cursor: bool = False


def _engines(filters: SearchFilters) -> list[str]:
    serves, rank = filters.get("serves"), filters.get("max_lora_rank")
    return [e for e in (serves, "vllm" if rank is not None else None) if e]


def shape_of(principal: Principal, filters: SearchFilters) -> Shape:
    """The :class:`Shape` of a search for ``principal``."""
    serves, rank = filters.get("serves"), filters.get("max_lora_rank")
    return Shape(caller_kind(principal), bool(filters.get("base_model")), bool(filters.get("fingerprint")),
                 bool(filters.get("method")), bool(filters.get("tag")), bool(filters.get("namespace")),
                 len(search_words(filters.get("q"))), bool(serves) or rank is not None, bool(_engines(filters)),
                 rank is not None, filters.get("sort") or "updated", bool(filters.get("cursor")))


def search_params(principal: Principal, filters: SearchFilters) -> dict[str, Any]:
    """The bound values of a search's statement (every filter given, the words as patterns)."""
    params = caller_params(principal)
    if base_model := filters.get("base_model"):
        params["bm_ns"], _, params["bm_name"] = base_model.partition("/")
    if fingerprint := filters.get("fingerprint"):
        params["fingerprint"] = fingerprint
    if method := filters.get("method"):
        params["method"] = method.upper()
    if tag := filters.get("tag"):
        params["tag"] = [tag]
    if namespace := filters.get("namespace"):
        params["namespace"] = namespace
    params |= {f"word{i}": _like(w) for i, w in enumerate(search_words(filters.get("q")))}
    if engines := _engines(filters):
        params["engines"] = engines
    if (rank := filters.get("max_lora_rank")) is not None:
        params["max_lora_rank"] = rank
    return params


def conditions_of(shape: Shape) -> list[ColumnElement[bool]]:
    """The WHERE conditions (on adapter ⋈ base_model) of a search of ``shape``, values bound by name."""
    conds: list[Any] = [visible_for(shape.caller)]
    # the base model as ids of the adapter's own column, so that the per-base-model keyset index serves the
    # page (looked up in an alias of base_model: the joined one would correlate)
    bm = BaseModel.__table__.alias("bm")
    if shape.base_model:
        conds.append(Adapter.base_model_id == select(bm.c.id).where(
            bm.c.namespace == bindparam("bm_ns"), bm.c.name == bindparam("bm_name")).scalar_subquery())
    if shape.fingerprint:
        conds.append(Adapter.base_model_id.in_(select(bm.c.id).where(bm.c.fingerprint == bindparam("fingerprint"))))
    if shape.method:
        conds.append(Adapter.method == bindparam("method"))
    if shape.tag:
        conds.append(Adapter.tags.contains(bindparam("tag", type_=Adapter.tags.type)))
    if shape.namespace:
        conds.append(Adapter.namespace == bindparam("namespace"))
    conds += text_conditions(shape.words)
    if shape.serving:
        conds.append(serving_filter(shape.engines, shape.rank))
    return conds


_JOINED = Adapter.__table__.join(BaseModel.__table__, BaseModel.id == Adapter.base_model_id)


@functools.lru_cache(maxsize=1024)
def page_statement(shape: Shape) -> Select[Any]:
    """A page of a search of ``shape`` (built once per shape): ``limit`` rows after ``offset``, or after the
    bound cursor (``cursor_at``, ``cursor_id``)."""
    stmt = select(*ADAPTER_COLUMNS).select_from(_JOINED).where(*conditions_of(shape))
    if shape.cursor:
        after = tuple_(bindparam("cursor_at", type_=Adapter.updated_at.type), bindparam("cursor_id", type_=Integer()))
        stmt = stmt.where(tuple_(Adapter.updated_at, Adapter.id) < after)
    else:
        stmt = stmt.offset(bindparam("offset", type_=Integer()))
    return stmt.order_by(*SORTS[shape.sort]).limit(bindparam("limit", type_=Integer()))


@functools.lru_cache(maxsize=1024)
def count_statement(shape: Shape, bounded: bool) -> Select[Any]:
    """The number of matches of a search of ``shape``; ``bounded``: at most the bound ``count_limit``."""
    counted = select(Adapter.id).select_from(_JOINED).where(*conditions_of(shape))
    if bounded:
        counted = counted.limit(bindparam("count_limit", type_=Integer()))
    return select(func.count()).select_from(counted.subquery())


async def _rows(db: AsyncSession | AsyncEngine, statement: Any, params: dict[str, Any]) -> list[Row[Any]]:
    if isinstance(db, AsyncEngine):
        return await read_once(db, statement, params)
    return list(await (await db.connection()).execute(statement, params))


async def search_adapters(db: AsyncSession | AsyncEngine, principal: Principal, *, count_upto: int | None = MAX_COUNTED,
                          **filters: Unpack[SearchFilters]) -> SearchPage:
    """Adapters matching every given filter, newest first (updated_at, then id: a stable order) or in
    another of :data:`SORTS`. ``cursor`` (a previous page's ``next_cursor``, default order only) continues
    by keyset; without it ``page`` picks a page by offset. The matches are counted up to ``count_upto``
    (0: not counted, ``total`` None; None: all of them); a last page by offset needs no count. One query
    for the page (and one more for a count), of a statement built once per :class:`Shape`."""
    sort, cursor = filters.get("sort") or "updated", filters.get("cursor")
    if sort not in SORTS:
        raise BadRequest(f"sort {sort[:40]!r} is not one of {', '.join(SORTS)}")
    if cursor and sort != "updated":
        raise BadRequest(f"a cursor pages the default order only; page sort={sort} by page")
    page, page_size = max(filters.get("page", 1), 1), filters.get("page_size", 20)
    shape, params = shape_of(principal, filters), search_params(principal, filters)
    if cursor:
        params["cursor_at"], params["cursor_id"] = decode_cursor(cursor)
    else:
        params["offset"] = (page - 1) * page_size
    rows = await _rows(db, page_statement(shape), params | {"limit": page_size + 1})
    items = [adapter_row(r) for r in rows[:page_size]]
    more = len(rows) > page_size
    total: int | None = None
    exact = False
    if not more and not cursor and (items or page == 1):  # the last page by offset: no match comes after it
        total, exact = (page - 1) * page_size + len(items), True
    elif count_upto != 0:
        bounded = {} if count_upto is None else {"count_limit": count_upto + 1}
        total = (await _rows(db, count_statement(shape, count_upto is not None), params | bounded))[0][0]
        exact = count_upto is None or total <= count_upto
        total = total if exact else count_upto
    last = items[-1] if more and items and sort == "updated" else None
    return SearchPage(items, total, exact, more,
                      encode_cursor(last.updated_at, last.id) if last and last.updated_at else None)


__all__ = [
    "MAX_COUNTED", "MAX_SEARCH_WORDS", "MAX_WORD_CHARS", "SORTS", "SearchFilters", "SearchPage", "Shape",
    "conditions_of", "count_statement", "decode_cursor", "encode_cursor", "page_statement", "search_adapters",
    "search_params", "search_words", "serving_filter", "shape_of", "text_conditions",
]
