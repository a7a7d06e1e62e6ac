"""Recording an audit event in the transaction of the write it describes, so the event exists
exactly when the change does. Webhook deliveries for it are queued by the flush that inserts it
(:mod:`registry_service.domain.webhooks.fanout`), in that same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import Event
from ...request_ids import current_request_id
from .kinds import KINDS

#: An event's details are bounded: a write never records more than this many keys at the top level.
MAX_DETAIL_KEYS = 32


class Actor(Protocol):
    """Who made a change: a :class:`~registry_service.domain.auth.tokens.Principal`, or :class:`By`."""

    @property
    def token_id(self) -> int | None: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class By:
    """An actor known by name and token id only (a worker acting for the token that submitted a job)."""

    name: str
    token_id: int | None = None


def new_event(kind: str, actor: Actor, *, namespace: str | None, adapter: str | None = None,
              subject: str | None = None, details: dict[str, Any] | None = None,
              request_id: str | None = None) -> Event:
    """An event of ``kind`` to add to the writing transaction. ``subject`` defaults to
    ``namespace[/adapter]``; ``request_id`` to the id of the request being handled."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    data = dict(details or {})
    if len(data) > MAX_DETAIL_KEYS:
        raise ValueError(f"an event records at most {MAX_DETAIL_KEYS} details")
    where = f"{namespace}/{adapter}" if namespace and adapter else (namespace or "")
    return Event(actor=(actor.name or "")[:128], token_id=actor.token_id, kind=kind, namespace=namespace,
                 adapter=adapter, subject=(subject or where)[:255], data=data,
                 request_id=request_id or current_request_id())


async def record_event(db: AsyncSession, kind: str, actor: Actor, *, namespace: str | None,
                       adapter: str | None = None, subject: str | None = None,
                       details: dict[str, Any] | None = None) -> Event:
    """:func:`new_event` added to ``db`` and flushed (so it has its id and its webhook deliveries)."""
    event = new_event(kind, actor, namespace=namespace, adapter=adapter, subject=subject, details=details)
    db.add(event)
    await db.flush()
    return event


__all__ = ["MAX_DETAIL_KEYS", "Actor", "By", "new_event", "record_event"]
