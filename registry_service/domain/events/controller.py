"""``GET /api/v1/events``: a namespace's audit log, newest first, a bounded page at a time."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get
from litestar.params import Parameter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import Event
from ...names import PART_PATTERN, check_part
from ...openapi import problems
from ...params import Cursor, NamePart
from ..auth.tokens import Principal

OptionalName = Annotated[str | None, Parameter(pattern=PART_PATTERN, max_length=96, description="an adapter name")]
#: Events one page holds at most.
MAX_EVENTS_PAGE = 200


def describe_event(e: Event) -> dict[str, Any]:
    """The JSON form of an event."""
    return {"id": e.id, "kind": e.kind, "at": e.at.isoformat() if e.at else None, "namespace": e.namespace,
            "adapter": e.adapter, "subject": e.subject, "actor": {"name": e.actor, "token_id": e.token_id},
            "request_id": e.request_id, "details": e.data}


async def events_of(db: AsyncSession, namespace: str, adapter: str | None = None, *, limit: int = 50,
                    before: int | None = None) -> list[Event]:
    """Events of ``namespace`` (of one ``adapter`` of it when given), newest first, older than id ``before``."""
    stmt = select(Event).where(Event.namespace == namespace)
    if adapter is not None:
        stmt = stmt.where(Event.adapter == adapter)
    if before is not None:
        stmt = stmt.where(Event.id < before)
    return list((await db.execute(stmt.order_by(Event.id.desc()).limit(limit))).scalars())


#: Events the adapter page lists.
ACTIVITY_SHOWN = 20


async def adapter_activity(db: AsyncSession, viewer: Principal, ns: str, name: str) -> list[dict[str, Any]] | None:
    """The newest events of adapter ``ns/name`` for its page: only members of the namespace (tokens
    that may read its private content) see them; ``None`` for everyone else."""
    if not viewer.can_read(ns):
        return None
    return [describe_event(e) for e in await events_of(db, ns, name, limit=ACTIVITY_SHOWN)]



class EventController(Controller):
    """``/api/v1/events``"""

    path = "/api/v1/events"
    tags = ["events"]

    @get("/", responses=problems(400, 401, 403))
    async def list_events(
        self, db: AsyncSession, principal: Principal, namespace: NamePart, adapter: OptionalName = None,
        cursor: Cursor = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_EVENTS_PAGE, description="events per page")] = 50,
    ) -> dict[str, Any]:
        """The audit log of a namespace (or one adapter of it), newest first; namespace admins only.
        ``next_cursor`` (null on the last page) fetches the next, older page."""
        check_part(namespace, "namespace")
        principal.require_admin(namespace)
        rows = await events_of(db, namespace, adapter, limit=limit + 1, before=cursor)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"items": [describe_event(e) for e in rows], "next_cursor": rows[-1].id if more and rows else None}


__all__ = ["ACTIVITY_SHOWN", "MAX_EVENTS_PAGE", "EventController", "adapter_activity", "describe_event", "events_of"]
