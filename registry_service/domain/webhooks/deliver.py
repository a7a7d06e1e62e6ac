"""Sending one webhook delivery (run by a worker as the ``registry.webhook`` task).

The body is the event as JSON; it is signed (:mod:`.signing`) and POSTed without following
redirects, to a target checked again against the SSRF rule (:mod:`.targets`). A 2xx answer
delivers it; anything else is recorded on the delivery (status or error, attempts) and raised as
:class:`DeliveryFailed`, so the queue tries again after a growing wait, until the last attempt,
which marks the delivery failed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ...db.models import Event, Webhook, WebhookDelivery
from ...settings import Settings
from .signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign
from .targets import TargetRefused, check_target

log = logging.getLogger("adapter_registry.webhooks")
#: Characters of a target's answer or error kept in the delivery log.
MAX_ERROR_CHARS = 500
USER_AGENT = "adapter-registry-webhooks/1"


class DeliveryFailed(Exception):
    """A delivery attempt did not get a 2xx answer; the queue retries it."""


def event_payload(event: Event, delivery_id: int) -> dict[str, Any]:
    """The JSON a webhook receives for ``event``."""
    return {
        "delivery": delivery_id,
        "event": {
            "id": event.id, "kind": event.kind, "at": event.at.isoformat() if event.at else None,
            "namespace": event.namespace, "adapter": event.adapter, "subject": event.subject,
            "actor": {"name": event.actor, "token_id": event.token_id}, "request_id": event.request_id,
            "details": event.data,
        },
    }


async def _post(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> tuple[int | None, str | None]:
    """POST ``body``; ``(status, None)`` for an answer, ``(None, error)`` when none came."""
    try:
        await check_target(url, allow_private=settings.webhook_allow_private)
        async with httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False,
                                     trust_env=False) as client:
            async with client.stream("POST", url, content=body, headers=headers) as response:
                return response.status_code, None
    except TargetRefused as exc:
        return None, f"target refused: {exc}"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


async def deliver(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, delivery_id: int, *,
                  last_attempt: bool) -> str:
    """Try delivery ``delivery_id`` once; returns its state. Raises :class:`DeliveryFailed` when the
    attempt failed and another one will come."""
    async with sessionmaker() as db:
        delivery = await db.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.state != "pending":  # the webhook was deleted, or a retry raced
            return "gone" if delivery is None else delivery.state
        hook = await db.get(Webhook, delivery.webhook_id)
        event = await db.get(Event, delivery.event_id)
        assert hook is not None and event is not None  # both cascade to their deliveries
        url, secret, kind = hook.url, hook.secret, event.kind
        body = json.dumps(event_payload(event, delivery_id), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, EVENT_HEADER: kind,
               DELIVERY_HEADER: str(delivery_id), SIGNATURE_HEADER: sign(secret, body)}
    status, error = await _post(url, body, headers, settings)
    ok = status is not None and 200 <= status < 300
    state = "delivered" if ok else ("failed" if last_attempt else "pending")
    now = dt.datetime.now(dt.UTC)
    async with sessionmaker() as db, db.begin():
        row = await db.get(WebhookDelivery, delivery_id, with_for_update=True)
        if row is not None:
            row.attempts += 1
            row.last_status, row.last_error, row.state, row.updated_at = status, error, state, now
            if ok:
                row.delivered_at = now
    log.info("webhook delivery %s (%s to %s): %s", delivery_id, kind, url, state,
             extra={"delivery_id": delivery_id, "status": status})
    if state == "pending":
        raise DeliveryFailed(f"delivery {delivery_id} got {status if status is not None else error}; retrying")
    return state


__all__ = ["USER_AGENT", "DeliveryFailed", "deliver", "event_payload"]
