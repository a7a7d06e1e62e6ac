"""The audit log: every write is an :class:`~registry_service.db.models.Event` (who, when, which
request, what), added by :func:`new_event`/:func:`record_event` in the writing transaction, listed
by ``GET /api/v1/events`` for namespace admins and on the adapter page, and handed to the
namespace's webhooks (:mod:`registry_service.domain.webhooks`)."""

from ..webhooks import fanout as _fanout  # noqa: F401  (queues webhook deliveries when events are flushed)
from . import tokens as _tokens  # noqa: F401  (token.created / token.revoked events when tokens are flushed)
from .kinds import KINDS
from .record import Actor, By, new_event, record_event

__all__ = ["KINDS", "Actor", "By", "new_event", "record_event"]
