"""Committing rows that reference blobs: storage transfers happen outside any transaction, and the
per-blob advisory locks guard only the decision (DESIGN: "locks guard decisions, never transfers").

:func:`commit_with_blobs` runs the protocol that adapter pushes, base-model weights and merge jobs share:

1. **Store.** Each payload whose bytes are not stored yet is stored (under its content key, or kept
   where a direct upload put it). No transaction is open and no lock is held while bytes move.
2. **Decide.** One short transaction takes each blob's advisory lock *shared* (in sha256 order),
   looks up where the bytes are stored now (HEAD requests only), runs the caller's decision (insert
   the rows) and commits. Blobs are deleted only under their lock taken *exclusively*, so a blob
   found here stays until the rows that reference it are committed, while publishes that reference
   the same bytes (every adapter folder's identical model-card README) never wait for each other.
   A blob stored in step 1 that was deleted before its
   lock was taken (a failed push of the same bytes cleaned up) is stored again and the decision
   retried.
3. **Clean up.** If anything fails before COMMIT, the blobs step 1 stored are deleted, each under
   its lock and only if no row references it (another push of the same bytes may have committed
   meanwhile). If the database is unreachable for that, they are left in storage, unreferenced,
   for the blob collection; a retry of the same push reuses them. If COMMIT itself fails, its
   outcome is unknown: nothing is deleted, and :class:`CommitOutcomeUnknown` (503) is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from sqlalchemy import exists, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import BaseModelFile, File
from ..errors import ServiceUnavailable, reject
from ..storage import BlobStore, blob_key
from .payloads import Payload

log = logging.getLogger("adapter_registry.blobs")
T = TypeVar("T")
#: The caller's decision, run in the committing transaction under the blobs' locks: given where each
#: sha256's bytes are stored (the key a file row records), it writes its rows and returns its result;
#: ``None`` means it published nothing (the blobs this call stored are then cleaned up).
Decide = Callable[[AsyncSession, Mapping[str, str]], Awaitable[T | None]]
#: Rounds of store-then-decide when stored blobs keep vanishing before their locks are taken.
MAX_ROUNDS = 3


class CommitOutcomeUnknown(ServiceUnavailable):
    """The database connection failed during COMMIT: the change may or may not have been saved."""

    def __init__(self) -> None:
        super().__init__("the database connection was lost while saving: the change may or may not have been "
                         "made; look before trying again")


class _BlobsGone(Exception):
    """Blobs found or stored before the decision are gone by the time their locks are held."""

    def __init__(self, shas: list[str]) -> None:
        super().__init__(", ".join(shas))
        self.shas = shas


async def lock_blob(db: AsyncSession, sha256: str, *, shared: bool = False) -> None:
    """Take the blob's advisory lock until ``db``'s transaction ends: exclusively to delete the blob,
    ``shared`` to reference it (a blob found under a shared lock stays until the transaction's rows
    that reference it are committed; other references do not wait)."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await db.execute(text(f"SELECT {fn}(hashtextextended(:k, 7))"), {"k": sha256})


async def _recorded_keys(db: AsyncSession, sha256: str) -> list[str]:
    """Keys other than the content key that file rows recorded for ``sha256`` (direct uploads')."""
    return list((await db.execute(
        select(File.storage_key).where(File.sha256 == sha256, File.storage_key != blob_key(sha256)).distinct()
    )).scalars().all())


async def stored_key(db: AsyncSession, store: BlobStore, sha256: str) -> str | None:
    """Where the bytes of ``sha256`` are stored already: the content key, or a key a file row
    recorded (a direct upload's); ``None`` if nowhere. Under the blob's lock, the answer holds
    until the transaction ends."""
    if await store.exists(sha256):
        return blob_key(sha256)
    for key in await _recorded_keys(db, sha256):
        if await store.exists(key):
            return key
    return None


async def _find_stored(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, sha256: str) -> str | None:
    """:func:`stored_key` without a lock or an open transaction during the storage requests (a hint:
    the decision looks again under the lock)."""
    if await store.exists(sha256):
        return blob_key(sha256)
    async with sessionmaker() as db:
        recorded = await _recorded_keys(db, sha256)
    for key in recorded:
        if await store.exists(key):
            return key
    return None


async def _store_missing(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore,
                         payloads: Mapping[str, Payload], shas: Iterable[str], mine: dict[str, str]) -> None:
    """Store the bytes of each of ``shas`` that are stored nowhere yet; record in ``mine`` the key of
    every blob this call stored."""
    for sha in sorted(shas):
        if await _find_stored(sessionmaker, store, sha) is not None:
            continue
        payload = payloads[sha]
        info = await payload.store(store)
        mine[info.sha256] = info.key
        if info.sha256 != sha:
            raise reject(f"{payload.filename} changed while it was being stored", expected=sha, found=info.sha256)


async def _locked_keys(db: AsyncSession, store: BlobStore, shas: Iterable[str], mine: Mapping[str, str]
                       ) -> dict[str, str]:
    """Lock every blob and say where each is stored; :class:`_BlobsGone` names those stored nowhere."""
    keys: dict[str, str] = {}
    gone: list[str] = []
    for sha in sorted(shas):
        await lock_blob(db, sha, shared=True)
        key = await stored_key(db, store, sha)
        own = mine.get(sha)
        if key is None and own is not None and own != blob_key(sha) and await store.exists(own):
            key = own  # a direct upload's blob, known to no row yet
        if key is None:
            gone.append(sha)
        else:
            keys[sha] = key
    if gone:
        raise _BlobsGone(gone)
    return keys


async def referenced(db: AsyncSession, key: str) -> bool:
    """Whether any file row (of an adapter version or of a base model) records ``key``."""
    return bool(await db.scalar(select(or_(exists().where(File.storage_key == key),
                                           exists().where(BaseModelFile.storage_key == key)))))


async def discard_blobs(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore,
                        blobs: Mapping[str, str]) -> None:
    """Delete the blobs ``{sha256: key}`` that no row references, each under its lock. Never raises:
    a blob that cannot be checked (database unreachable) is left for the blob collection and logged."""
    for sha, key in sorted(blobs.items()):
        try:
            async with sessionmaker() as db, db.begin():
                await lock_blob(db, sha)
                if not await referenced(db, key):
                    await store.delete(key)
        except Exception as exc:  # cleanup after a failure: report, never mask the failure itself
            log.warning("left blob %s in storage (cannot check whether it is referenced: %s: %s); the blob "
                        "collection removes it if nothing references it", key, type(exc).__name__,
                        (str(exc).splitlines() or [""])[0][:200])


async def commit_with_blobs(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore,
                            payloads: Sequence[Payload], decide: Decide[T]) -> T | None:
    """Store ``payloads`` (outside any transaction), then commit ``decide``'s rows in one short
    transaction under the blobs' locks; returns what ``decide`` returned. See the module docstring for
    what is cleaned up when, and :class:`CommitOutcomeUnknown`."""
    by_sha: dict[str, Payload] = {}
    for p in payloads:
        by_sha.setdefault(p.sha256, p)
    mine: dict[str, str] = {}
    pending: Iterable[str] = list(by_sha)
    committing = False
    try:
        for _round in range(MAX_ROUNDS):
            await _store_missing(sessionmaker, store, by_sha, pending, mine)
            async with sessionmaker() as db:
                try:
                    keys = await _locked_keys(db, store, by_sha, mine)
                except _BlobsGone as exc:
                    pending = exc.shas
                    continue
                result = await decide(db, keys)
                committing = True
                try:
                    await db.commit()
                except Exception as exc:
                    log.error("COMMIT failed; its outcome is unknown, so blobs %s are kept", sorted(mine.values()),
                              exc_info=exc)
                    raise CommitOutcomeUnknown() from exc
            unused = {sha: key for sha, key in mine.items() if result is None or keys.get(sha) != key}
            if unused:
                await discard_blobs(sessionmaker, store, unused)
            return result
        raise ServiceUnavailable("stored bytes kept disappearing while publishing (a concurrent failed upload of "
                                 "the same files?); try again")
    except BaseException:
        if not committing and mine:
            await discard_blobs(sessionmaker, store, mine)
        raise


__all__ = ["MAX_ROUNDS", "CommitOutcomeUnknown", "Decide", "commit_with_blobs", "discard_blobs", "lock_blob",
           "referenced", "stored_key"]
