"""Alias history: every move of an alias is kept (``alias_move``), so "which version was ``prod`` when" has an
answer. A move is recorded in the transaction that makes it (a push moving ``latest`` or its alias, ``PUT`` and
``DELETE …/aliases/{alias}``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import AdapterVersion, Alias, AliasMove

#: Moves listed per page of ``GET …/aliases/{alias}/history``.
MAX_HISTORY_PAGE = 100


async def record_moves(db: AsyncSession, adapter_id: int, names: Sequence[str], version: AdapterVersion | None,
                       actor: str | None) -> None:
    """Record that aliases ``names`` of the adapter now point at ``version`` (None: removed); call before the
    aliases change, so the versions they pointed at before are read."""
    rows = await db.execute(
        select(Alias.name, AdapterVersion.version).join(AdapterVersion, AdapterVersion.id == Alias.version_id)
        .where(Alias.adapter_id == adapter_id, Alias.name.in_(list(names))))
    before = dict(rows.tuples().all())
    for name in names:
        if version is not None and before.get(name) == version.version:
            continue  # pointed there already: no move
        db.add(AliasMove(adapter_id=adapter_id, alias=name, version=version.version if version else None,
                         commit=version.commit if version else None, previous_version=before.get(name),
                         moved_by=actor))


async def history(db: AsyncSession, adapter_id: int, alias: str, *, limit: int = MAX_HISTORY_PAGE,
                  before: int | None = None) -> list[dict[str, Any]]:
    """The alias's moves, newest first (``limit`` of them, older than move ``before`` when given)."""
    stmt = select(AliasMove).where(AliasMove.adapter_id == adapter_id, AliasMove.alias == alias)
    if before is not None:
        stmt = stmt.where(AliasMove.id < before)
    rows = (await db.execute(stmt.order_by(AliasMove.id.desc()).limit(limit))).scalars()
    return [describe_move(m) for m in rows]


def describe_move(m: AliasMove) -> dict[str, Any]:
    """The JSON form of one move (``version``/``commit`` null: the alias was removed)."""
    return {"id": m.id, "version": m.version, "commit": m.commit, "previous_version": m.previous_version,
            "moved_by": m.moved_by, "at": m.at.isoformat() if m.at else None}


async def recent_moves(db: AsyncSession, adapter_id: int, *, limit: int = 20) -> list[dict[str, Any]]:
    """The adapter's latest alias moves over all its aliases, newest first (``alias`` in each)."""
    rows = (await db.execute(select(AliasMove).where(AliasMove.adapter_id == adapter_id)
                             .order_by(AliasMove.id.desc()).limit(limit))).scalars()
    return [{"alias": m.alias, **describe_move(m)} for m in rows]
