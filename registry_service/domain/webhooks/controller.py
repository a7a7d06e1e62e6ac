"""Webhook routes, for namespace admins: ``/api/v1/namespaces/{ns}/webhooks`` (create, list),
``…/{id}`` (delete) and ``…/{id}/deliveries`` (the delivery log, newest first)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_201_CREATED
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import Webhook, WebhookDelivery
from ...errors import BadRequest, Conflict, NotFound
from ...openapi import problems
from ...params import Cursor, NamePart
from ...settings import Settings
from ..auth.tokens import Principal
from ..events import KINDS, record_event
from .targets import MAX_URL_CHARS, TargetRefused, check_target

HookId = Annotated[int, Parameter(ge=1, le=2**31 - 1, description="the webhook's id")]
#: Deliveries one page of the log holds at most.
MAX_DELIVERIES_PAGE = 200



class WebhookCreate(msgspec.Struct):
    """A new webhook: where to send, which event kinds (``["*"]``: all), and the signing secret
    (generated when omitted; shown only in this answer)."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_CHARS)]
    events: Annotated[list[Annotated[str, msgspec.Meta(max_length=48)]], msgspec.Meta(min_length=1, max_length=64)] = \
        msgspec.field(default_factory=lambda: ["*"])
    secret: Annotated[str, msgspec.Meta(min_length=16, max_length=256)] | None = None


def describe_webhook(hook: Webhook) -> dict[str, Any]:
    """A webhook's JSON form (never its secret)."""
    return {"id": hook.id, "namespace": hook.namespace, "url": hook.url, "events": list(hook.events),
            "created_by": hook.created_by, "created_at": hook.created_at.isoformat() if hook.created_at else None}


def describe_delivery(d: WebhookDelivery) -> dict[str, Any]:
    """A delivery's JSON form."""
    return {"id": d.id, "event_id": d.event_id, "state": d.state, "attempts": d.attempts,
            "last_status": d.last_status, "last_error": d.last_error,
            "created_at": d.created_at.isoformat() if d.created_at else None,
            "updated_at": d.updated_at.isoformat() if d.updated_at else None,
            "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None}


async def _webhook(db: AsyncSession, ns: str, hook_id: int) -> Webhook:
    hook = await db.get(Webhook, hook_id)
    if hook is None or hook.namespace != ns:
        raise NotFound(f"namespace {ns!r} has no webhook {hook_id}")
    return hook


class WebhookController(Controller):
    """``/api/v1/namespaces/{ns}/webhooks``"""

    path = "/api/v1/namespaces/{ns:str}/webhooks"
    tags = ["webhooks"]

    @post("/", status_code=HTTP_201_CREATED, responses=problems(400, 401, 403, 409, 413))
    async def create_webhook(self, ns: NamePart, data: WebhookCreate, db: AsyncSession, principal: Principal,
                             settings: Settings) -> dict[str, Any]:
        """Add a webhook; the answer holds its secret (the only time it is shown)."""
        principal.require_admin(ns)
        unknown = sorted(set(data.events) - set(KINDS) - {"*"})
        if unknown:
            raise BadRequest(f"unknown event kinds {unknown}; known: {sorted(KINDS)} or '*'")
        try:
            await check_target(data.url, allow_private=settings.webhook_allow_private)
        except TargetRefused as exc:
            raise BadRequest(f"webhook URL refused: {exc}") from exc
        count = await db.scalar(select(func.count()).select_from(Webhook).where(Webhook.namespace == ns)) or 0
        if count >= settings.max_webhooks_per_namespace:
            raise Conflict(f"namespace {ns!r} has {count} webhooks already, the most it may have "
                           "(max_webhooks_per_namespace); delete one first")
        secret = data.secret or secrets.token_urlsafe(32)
        hook = Webhook(namespace=ns, url=data.url, secret=secret, events=sorted(set(data.events)),
                       created_by=principal.name)
        db.add(hook)
        await db.flush()
        await db.refresh(hook)
        await record_event(db, "webhook.created", principal, namespace=ns,
                           details={"webhook": hook.id, "url": hook.url, "events": hook.events})
        body = describe_webhook(hook) | {"secret": secret}
        await db.commit()
        return body

    @get("/", responses=problems(401, 403))
    async def list_webhooks(self, ns: NamePart, db: AsyncSession, principal: Principal) -> dict[str, Any]:
        """The namespace's webhooks (without their secrets)."""
        principal.require_admin(ns)
        rows = (await db.execute(select(Webhook).where(Webhook.namespace == ns).order_by(Webhook.id))).scalars()
        return {"items": [describe_webhook(h) for h in rows]}

    @delete("/{hook_id:int}", status_code=200, responses=problems(401, 403, 404))
    async def delete_webhook(self, ns: NamePart, hook_id: HookId, db: AsyncSession, principal: Principal
                             ) -> dict[str, Any]:
        """Remove a webhook and its delivery log; deliveries not yet sent are dropped."""
        principal.require_admin(ns)
        hook = await _webhook(db, ns, hook_id)
        await db.delete(hook)
        await record_event(db, "webhook.deleted", principal, namespace=ns, details={"webhook": hook_id})
        await db.commit()
        return {"deleted": hook_id}

    @get("/{hook_id:int}/deliveries", responses=problems(401, 403, 404))
    async def list_deliveries(
        self, ns: NamePart, hook_id: HookId, db: AsyncSession, principal: Principal,
        cursor: Cursor = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_DELIVERIES_PAGE, description="deliveries per page")] = 50,
    ) -> dict[str, Any]:
        """The webhook's delivery log, newest first."""
        principal.require_admin(ns)
        await _webhook(db, ns, hook_id)
        stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook_id)
        if cursor is not None:
            stmt = stmt.where(WebhookDelivery.id < cursor)
        rows = list((await db.execute(stmt.order_by(WebhookDelivery.id.desc()).limit(limit + 1))).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return {"items": [describe_delivery(d) for d in rows], "next_cursor": rows[-1].id if more and rows else None}


__all__ = ["MAX_DELIVERIES_PAGE", "WebhookController", "describe_delivery", "describe_webhook"]
