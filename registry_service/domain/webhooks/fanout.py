"""Queueing events for the namespace's webhooks: whenever a flush inserts :class:`Event` rows, one
delivery row and one queue entry per subscribed webhook are written by that flush, in the same
transaction (a transactional outbox: nothing is sent for a change that was rolled back, nothing is
lost for one that was committed). This works for every writer, API process or worker, because it
hangs on SQLAlchemy's ``after_flush`` session event rather than on each call site."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import insert, or_, select, text
from sqlalchemy.orm import Session

from ...db.models import Event, Webhook, WebhookDelivery

QUEUE = "webhooks"
TASK = "registry.webhook"
_DEFER = text("SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, 0, NULL, NULL, "
              "CAST(:args AS jsonb), NULL)::procrastinate_job_to_defer_v1])")


def queue_deliveries(session: Session, namespace: str | None, kind: str, event_id: int) -> int:
    """Queue event ``event_id`` (inserted) for every webhook of ``namespace`` that wants ``kind``;
    returns how many."""
    if namespace is None:
        return 0
    conn = session.connection()
    hooks = conn.execute(select(Webhook.id).where(
        Webhook.namespace == namespace,
        or_(Webhook.events.contains([kind]), Webhook.events.contains(["*"])))).scalars().all()
    for hook_id in hooks:
        delivery_id = conn.execute(insert(WebhookDelivery).values(
            webhook_id=hook_id, event_id=event_id, state="pending", attempts=0).returning(WebhookDelivery.id)
        ).scalar_one()
        conn.execute(_DEFER, {"queue": QUEUE, "task": TASK, "args": json.dumps({"delivery_id": delivery_id})})
    return len(hooks)


@sa_event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    for obj in list(session.new):
        if isinstance(obj, Event):
            queue_deliveries(session, obj.namespace, obj.kind, obj.id)


__all__ = ["QUEUE", "TASK", "queue_deliveries"]
