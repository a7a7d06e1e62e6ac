"""Per-namespace quotas: the bytes of files a namespace holds, and its open upload sessions.

``Settings.namespace_max_bytes`` bounds the sizes of every file of the namespace's adapter versions
and base-model weights, plus the declared sizes of its open upload sessions (a session reserves its
size when it opens, so finalizing it never goes over). ``Settings.namespace_max_open_uploads``
bounds its open sessions (adapter and base-model uploads together). 0 turns a quota off. Sizes are
counted as stored per file, before de-duplication.

Every write checks twice: early, to refuse before any bytes move, and again inside the transaction
that commits it (``hold=True``), under the namespace's quota lock (a transaction-scoped advisory lock),
so that writes racing each other cannot go over together. The lock is taken only while a quota is on.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import Adapter, AdapterVersion, BaseModel, BaseModelFile, BaseModelUpload, File, UploadSession
from ..errors import QuotaExceeded
from ..settings import Settings

#: Session states that still hold (or are about to hold) storage.
LIVE_SESSION_STATES = ("open", "finalizing")


async def stored_bytes(db: AsyncSession, namespace: str) -> int:
    """Bytes of every file of ``namespace``'s adapter versions and base-model weights."""
    adapters = await db.scalar(select(func.coalesce(func.sum(File.size), 0))
                               .join(AdapterVersion, AdapterVersion.id == File.version_id)
                               .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
                               .where(Adapter.namespace == namespace))
    weights = await db.scalar(select(func.coalesce(func.sum(BaseModelFile.size), 0))
                              .join(BaseModel, BaseModel.id == BaseModelFile.base_model_id)
                              .where(BaseModel.namespace == namespace))
    return int(adapters or 0) + int(weights or 0)


async def open_sessions(db: AsyncSession, namespace: str) -> tuple[int, int]:
    """(count, declared bytes) of ``namespace``'s live, unexpired upload sessions."""
    now = dt.datetime.now(dt.UTC)
    count, size = 0, 0
    for table, where in ((UploadSession, UploadSession.namespace == namespace),
                         (BaseModelUpload, BaseModel.namespace == namespace)):
        stmt = select(func.count(), func.coalesce(func.sum(table.size), 0)).select_from(table)
        if table is BaseModelUpload:
            stmt = stmt.join(BaseModel, BaseModel.id == BaseModelUpload.base_model_id)
        row = (await db.execute(stmt.where(where, table.state.in_(LIVE_SESSION_STATES),
                                           (table.expires_at.is_(None)) | (table.expires_at > now)))).one()
        count += int(row[0])
        size += int(row[1] or 0)
    return count, size


async def lock_namespace(db: AsyncSession, namespace: str) -> None:
    """Take ``namespace``'s quota lock until ``db``'s transaction ends (writes that check a quota
    under it are serialized per namespace; reads never take it)."""
    await db.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 13))"), {"k": namespace})


async def check_quota(db: AsyncSession, settings: Settings, namespace: str, add_bytes: int, *,
                      new_session: bool = False, hold: bool = False) -> None:
    """403 when writing ``add_bytes`` more to ``namespace`` (or, ``new_session``, opening one more
    upload session) would go over its quota. ``hold``: first take the namespace's quota lock for the
    rest of ``db``'s transaction, which must be the one that commits the write."""
    if not settings.namespace_max_bytes and not (new_session and settings.namespace_max_open_uploads):
        return
    if hold:
        await lock_namespace(db, namespace)
    count, reserved = await open_sessions(db, namespace)
    limit = settings.namespace_max_open_uploads
    if new_session and limit and count >= limit:
        raise QuotaExceeded(f"namespace {namespace!r} has {count} upload sessions open, its limit "
                            f"(namespace_max_open_uploads); finish or abort one first",
                            extra={"limit": limit, "used": count})
    limit = settings.namespace_max_bytes
    if limit:
        used = await stored_bytes(db, namespace) + reserved
        if used + add_bytes > limit:
            raise QuotaExceeded(f"namespace {namespace!r} holds {used} bytes (open uploads included); "
                                f"{add_bytes} more would pass its quota of {limit} bytes (namespace_max_bytes)",
                                extra={"limit": limit, "used": used, "adding": add_bytes})


__all__ = ["check_quota", "lock_namespace", "open_sessions", "stored_bytes"]
