"""What the hot read handlers need, as one dependency (``read``).

Litestar resolves the independent dependencies of a handler concurrently, in a task group with one
task each; for a read that answers in a few milliseconds those tasks were a tenth of its CPU. The
read handlers therefore take this one dependency instead of ``reader``, ``principal``, ``settings``
and ``store``: it is resolved by one plain call (:func:`registry_service.deps.provide_read`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from ..settings import Settings
from ..storage import BlobStore
from .auth.tokens import Principal


@dataclass(frozen=True, slots=True)
class Read:
    """The reader engine (autocommit, one round trip per read), the caller, the settings and the blob store."""

    reader: AsyncEngine
    principal: Principal
    settings: Settings
    store: BlobStore


__all__ = ["Read"]
