"""Changing an adapter's visibility: only a namespace admin, only through ``PATCH
/api/v1/adapters/{ns}/{name}``, and every change is recorded (:func:`note_visibility_change`).

A namespace admin is a token of that namespace with the ``admin`` scope, or a global admin
(:meth:`..auth.tokens.Principal.can_admin`); tokens with ``write`` may push and edit description and
tags, but not make private work public or the other way round.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import Adapter
from ..auth.tokens import Principal
from ..events import new_event

log = logging.getLogger("adapter_registry.audit")


def note_visibility_change(db: AsyncSession, principal: Principal, adapter: Adapter, old: str, new: str) -> None:
    """Record that ``principal`` changed the visibility of ``adapter`` from ``old`` to ``new`` (in ``db``'s
    transaction): a ``visibility.changed`` audit event, and a log line."""
    db.add(new_event("visibility.changed", principal, namespace=adapter.namespace, adapter=adapter.name,
                     details={"from": old, "to": new}))
    log.info("visibility of %s/%s changed from %s to %s by %s (token id %s)", adapter.namespace, adapter.name, old,
             new, principal.name, principal.token_id)


def change_visibility(db: AsyncSession, principal: Principal, adapter: Adapter, visibility: str) -> None:
    """Set ``adapter``'s visibility (locked by the caller); 403 unless ``principal`` is a namespace admin."""
    if visibility == adapter.visibility:
        return
    principal.require_admin(adapter.namespace)
    old, adapter.visibility = adapter.visibility, visibility
    note_visibility_change(db, principal, adapter, old, visibility)


__all__ = ["change_visibility", "note_visibility_change"]
