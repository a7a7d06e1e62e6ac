"""One collection run: what storage holds that nothing will use any more.

1. **Upload sessions** (adapter and base-model uploads alike): an open session past its expiry
   ends ``expired``; one still ``finalizing`` ``gc_finalizing_s`` after its expiry is stuck (the
   API process finalizing it died) and ends ``failed``. Either way its multipart upload and staged
   object are removed (a direct upload's object only if no file row recorded it).
2. **Multipart uploads** in storage that no open session owns, older than the grace period (an
   API process died between opening one and saving its session), are aborted.
3. **Objects** older than the grace period: a content-addressed blob (``blobs/sha256/…``) is
   deleted under its per-sha256 advisory lock if no file row references it — the lock the publish
   path takes around its decision (:mod:`..blob_commits`), so a push that stored the blob either
   committed its rows before (the blob is referenced and stays) or finds it gone under the lock and
   stores it again. Upload blobs (``blobs/uploads/…``) and staged objects (``staging/…``) go when
   no file row records them and no open or finalizing session owns them.

The grace period (``gc_grace_s``) keeps young objects out of reach: a push stores its blobs before
it commits, and a direct upload completes before it is finalized.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ...db.models import BaseModelFile, BaseModelUpload, File, UploadSession
from ...settings import Settings
from ...storage.base import BLOB_PREFIX, STAGING_PREFIX, UPLOAD_BLOB_PREFIX, BlobStore, is_direct_key, sha256_from_key
from ..blob_commits import lock_blob, referenced
from ..upload_sessions import release_storage

log = logging.getLogger("adapter_registry.gc")
_LIVE = ("open", "finalizing")
_SESSION_TABLES: tuple[Any, ...] = (UploadSession, BaseModelUpload)
#: Sessions ended in one run at most (the next run goes on).
MAX_SESSIONS_PER_RUN = 1000


@dataclass
class GcReport:
    """What a run removed (or, in a dry run, would remove)."""

    dry_run: bool
    blobs: list[str] = field(default_factory=list)
    blob_bytes: int = 0
    staged: list[str] = field(default_factory=list)
    multipart: list[str] = field(default_factory=list)
    expired_sessions: list[str] = field(default_factory=list)
    stuck_sessions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many of each kind (the metrics' labels)."""
        return {"blobs": len(self.blobs), "staged": len(self.staged), "multipart": len(self.multipart),
                "expired_sessions": len(self.expired_sessions), "stuck_sessions": len(self.stuck_sessions)}

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "counts": self.counts(), "blob_bytes": self.blob_bytes,
                "blobs": self.blobs, "staged": self.staged, "multipart": self.multipart,
                "expired_sessions": self.expired_sessions, "stuck_sessions": self.stuck_sessions,
                "errors": self.errors}


async def collect(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, settings: Settings, *,
                  dry_run: bool = False, grace_s: float | None = None, now: dt.datetime | None = None) -> GcReport:
    """Run one collection (see the module docstring); ``grace_s`` overrides ``settings.gc_grace_s``."""
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(seconds=settings.gc_grace_s if grace_s is None else grace_s)
    report = GcReport(dry_run)
    await _end_sessions(sessionmaker, store, settings, now, report)
    await _abort_orphan_multipart(sessionmaker, store, cutoff, report)
    for prefix in (BLOB_PREFIX, UPLOAD_BLOB_PREFIX, STAGING_PREFIX):
        for obj in await store.list_objects(prefix, settings.gc_max_objects):
            if obj.modified >= cutoff:
                continue
            try:
                if await _collect_object(sessionmaker, store, obj.key, dry_run):
                    if prefix == STAGING_PREFIX:
                        report.staged.append(obj.key)
                    else:
                        report.blobs.append(obj.key)
                        report.blob_bytes += obj.size
            except Exception as exc:  # one bad object must not stop the run
                report.errors.append(f"{obj.key}: {type(exc).__name__}: {exc}"[:300])
    log.info("blob collection%s: %s, %d bytes of blobs%s", " (dry run)" if dry_run else "",
             ", ".join(f"{v} {k}" for k, v in report.counts().items()), report.blob_bytes,
             f"; {len(report.errors)} errors" if report.errors else "",
             extra={"gc": report.counts(), "dry_run": dry_run})
    return report


async def _end_sessions(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, settings: Settings,
                        now: dt.datetime, report: GcReport) -> None:
    stuck_before = now - dt.timedelta(seconds=settings.gc_finalizing_s)
    for table in _SESSION_TABLES:
        async with sessionmaker() as db, db.begin():
            rows = (await db.execute(select(table).where(or_(
                (table.state == "open") & (table.expires_at < now),
                (table.state == "finalizing") & (table.expires_at < stuck_before),
            )).limit(MAX_SESSIONS_PER_RUN).with_for_update(skip_locked=True))).scalars().all()
            for row in rows:
                stuck = row.state == "finalizing"
                (report.stuck_sessions if stuck else report.expired_sessions).append(str(row.id))
                if report.dry_run:
                    continue
                keep = is_direct_key(row.staging_key) and await _recorded(db, row.staging_key)
                await release_storage(store, row, keep=keep)
                row.state = "done" if keep else "failed" if stuck else "expired"


async def _recorded(db: AsyncSession, key: str) -> bool:
    return bool(await db.scalar(select(or_(exists().where(File.storage_key == key),
                                           exists().where(BaseModelFile.storage_key == key)))))


async def _owned(db: AsyncSession, key: str) -> bool:
    """Whether an open or finalizing session owns ``key`` (its object may be about to be published)."""
    for table in _SESSION_TABLES:
        if await db.scalar(select(exists().where(table.staging_key == key, table.state.in_(_LIVE)))):
            return True
    return False


async def _abort_orphan_multipart(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore,
                                  cutoff: dt.datetime, report: GcReport) -> None:
    for prefix in (STAGING_PREFIX, UPLOAD_BLOB_PREFIX):
        for upload in await store.list_multipart_uploads(prefix):
            if upload.initiated is None or upload.initiated >= cutoff:
                continue
            async with sessionmaker() as db:
                if await _owned(db, upload.staging_key):
                    continue
            report.multipart.append(upload.staging_key)
            if not report.dry_run:
                await store.abort_multipart(upload.staging_key, upload.upload_id)


async def _collect_object(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, key: str,
                          dry_run: bool) -> bool:
    """Delete ``key`` if nothing references or owns it (under its blob lock for content keys); True if it went."""
    async with sessionmaker() as db, db.begin():
        if key.startswith(BLOB_PREFIX):
            try:
                sha = sha256_from_key(key)
            except ValueError:
                return False  # not ours (a temporary file of the local backend): left alone
            await lock_blob(db, sha)
            if await referenced(db, key):
                return False
            if not dry_run:
                await store.delete(sha)
            return True
        if await _recorded(db, key) or await _owned(db, key):
            return False
        if not dry_run:
            if key.startswith(STAGING_PREFIX):
                await store.delete_staging(key)
            else:
                await store.delete(key)
        return True


__all__ = ["MAX_SESSIONS_PER_RUN", "GcReport", "collect"]
