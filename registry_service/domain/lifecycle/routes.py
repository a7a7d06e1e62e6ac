"""The controllers of deletion, the audit log and webhooks, as ``create_app`` mounts them."""

from __future__ import annotations

from ..events.controller import EventController
from ..webhooks.controller import WebhookController
from .controller import HubDeleteController

LIFECYCLE_ROUTES = [HubDeleteController, EventController, WebhookController]

__all__ = ["LIFECYCLE_ROUTES"]
