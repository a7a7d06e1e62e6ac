"""Token events without a call site: whenever a flush inserts an ``api_token`` row, or sets one's
``revoked``, a ``token.created`` / ``token.revoked`` event is written by that flush (whichever path
made the change: the API, ``adapter-registry token``, the bootstrap admin token). The actor is the
principal the request's session carries (:data:`ACTOR_KEY`: a principal, or a function that says the
request's caller once it is known; set by the ``db`` dependency), else the service itself."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import insert, inspect
from sqlalchemy.orm import Session

from ...db.models import ApiToken, Event
from ...request_ids import current_request_id
from ..webhooks.fanout import queue_deliveries

#: Key in ``Session.info`` of the principal a request's session acts for (or of a function answering it).
ACTOR_KEY = "actor"
SERVICE_ACTOR = "adapter-registry"


def _record(session: Session, kind: str, token: ApiToken) -> None:
    actor = session.info.get(ACTOR_KEY)
    if callable(actor):
        actor = actor()
    details = {"token": token.id, "name": token.name, "scopes": sorted(token.scopes or []),
               "expires_at": token.expires_at.isoformat() if token.expires_at else None}
    event_id = session.connection().execute(insert(Event).values(
        actor=getattr(actor, "name", SERVICE_ACTOR), token_id=getattr(actor, "token_id", None), kind=kind,
        namespace=token.namespace, adapter=None, subject=f"token#{token.id}", data=details,
        request_id=current_request_id()).returning(Event.id)).scalar_one()
    queue_deliveries(session, token.namespace, kind, event_id)


def _revoked_now(token: ApiToken) -> bool:
    history = inspect(token).attrs.revoked.history
    return bool(history.added) and history.added[0] is True and not (history.deleted and history.deleted[0])


@sa_event.listens_for(Session, "after_flush")
def _token_events(session: Session, _context: Any) -> None:
    for obj in list(session.new):
        if isinstance(obj, ApiToken):
            _record(session, "token.created", obj)
    for obj in list(session.dirty):
        if isinstance(obj, ApiToken) and _revoked_now(obj):
            _record(session, "token.revoked", obj)


__all__ = ["ACTOR_KEY", "SERVICE_ACTOR"]
