"""Upload sessions, for adapter weights and base-model weights alike: one large file sent in parts
straight to storage, then verified and published. Each step of a session is one function here; the
two controllers add only what differs (the session table, the checks before opening, and what
publishing the file means).

1. :func:`open_session` opens a multipart upload in storage and a session row, and answers one URL
   per part: presigned on S3 (the bytes never pass through the API), or ``…/parts/{n}`` on this
   service for the local backend, where :func:`receive_part` stores each part.
2. :func:`finalize_session` joins the parts and hands the file to the caller's publish step while
   the stored bytes are checked against the declared size and sha256; :func:`abort_session` gives
   up instead. Either way the session ends with its storage released.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from litestar import Request, Response
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sdk.nonfinite import scanner_for

from ..body_limits import check_length, too_large, upload_slot
from ..errors import BadRequest, Gone, NotFound, UploadRejected, reject
from ..metrics import S3_DIRECT_BYTES
from ..settings import Settings
from ..storage import MIN_PART_SIZE, BlobInfo, BlobStore, LocalBlobStore, is_direct_key
from ..storage.base import check_sha256
from .blob_commits import CommitOutcomeUnknown
from .payloads import Payload
from .quotas import check_quota


class SessionRow(Protocol):
    """What the upload-session tables have in common."""

    id: uuid.UUID
    state: str
    filename: str
    size: int
    sha256: str | None
    staging_key: str
    storage_upload_id: str | None
    part_size: int
    expires_at: dt.datetime | None


R = TypeVar("R", bound=SessionRow)
T = TypeVar("T")
#: The caller's publish step: given the file and the running size/sha256 check (which it must await
#: before it keeps anything), returns its result and whether it kept the uploaded object itself.
Publish = Callable[[Payload, "asyncio.Future[None]"], Awaitable[tuple[T, bool]]]


def declared_sha256(value: str | None) -> str | None:
    """A declared sha256, lowercased; a clear 400 if it is not 64 hex digits."""
    if value is None:
        return None
    try:
        return check_sha256(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def check_safetensors_size(size: int) -> None:
    """422 for a declared size too small to hold a safetensors file (8-byte header length + header)."""
    if size < 8:
        raise reject(f"{size} bytes cannot be a safetensors file", found=str(size))


def part_size_for(size: int, settings: Settings) -> int:
    """Part size for a file of ``size`` bytes (S3 allows at most 10,000 parts of at least 5 MiB)."""
    return max(settings.upload_part_bytes, MIN_PART_SIZE, math.ceil(size / 10_000))


def part_count(size: int, part_size: int) -> int:
    """How many parts a file of ``size`` bytes has (at least one)."""
    return max(1, math.ceil(size / part_size))


def part_bytes(row: SessionRow, part_number: int) -> int:
    """The size part ``part_number`` of ``row``'s file has; 400 for a part number the file does not have."""
    count = part_count(row.size, row.part_size)
    if not 1 <= part_number <= count:
        raise BadRequest(f"upload {row.id} has parts 1..{count} ({row.size} bytes in parts of {row.part_size}); "
                         f"there is no part {part_number}")
    return min(row.part_size, row.size - (part_number - 1) * row.part_size)


def check_session_size(size: int, settings: Settings) -> None:
    """422 for a size too small to be a safetensors file, 413 above ``max_upload_session_bytes``."""
    check_safetensors_size(size)
    if size > settings.max_upload_session_bytes:
        raise too_large(size, settings.max_upload_session_bytes, "the file",
                        " (max_upload_session_bytes) for one upload session")


async def open_session(db: AsyncSession, store: BlobStore, settings: Settings, table: Callable[..., R], *,
                       namespace: str, owner: dict[str, Any], filename: str, size: int, sha256: str | None,
                       created_by: str, hint: str, direct: bool, uploads_url: str) -> dict[str, Any]:
    """Open a multipart upload (``direct``: into a blob key it may stay under) and its session row in
    ``table`` (``owner``: the row's columns saying whose upload it is), and commit; returns the answer:
    the part size, one PUT URL per part, where to finalize (under ``uploads_url``) and until when.
    Refused above ``max_upload_session_bytes`` (413) and past ``namespace``'s quotas (403)."""
    check_session_size(size, settings)
    await check_quota(db, settings, namespace, size, new_session=True, hold=True)  # until the row commits
    part = part_size_for(size, settings)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=settings.upload_session_ttl_s)
    mp = await store.start_multipart(hint, direct=direct)
    row = table(**owner, filename=filename, size=size, sha256=sha256, staging_key=mp.staging_key,
                storage_upload_id=mp.upload_id, part_size=part, created_by=created_by, expires_at=expires)
    db.add(row)
    await db.flush()
    root = f"{uploads_url}/{row.id}"
    parts = []
    presign_s = max(1, min(settings.presign_expires_s, settings.upload_session_ttl_s))
    for n in range(1, part_count(size, part) + 1):
        url = await store.presign_part(mp.staging_key, mp.upload_id, n, expires=presign_s)
        parts.append({"part_number": n, "url": url or f"{root}/parts/{n}", "method": "PUT",
                      "size": min(part, size - (n - 1) * part)})
    body = {"id": str(row.id), "part_size": part, "parts": parts, "finalize_url": f"{root}/finalize",
            "direct": parts[0]["url"] != f"{root}/parts/1", "expires_at": expires.isoformat()}
    await db.commit()
    return body


async def find_open(db: AsyncSession, upload_id: str, query: Callable[[uuid.UUID], Select[tuple[R]]],
                    owner: str, *, allow_expired: bool = False) -> R:
    """The open session ``upload_id`` that ``query`` finds (it filters by ``owner``, e.g. ``ns/name``),
    locked for this transaction; 404 when there is none, 400 when it has ended, 410 when it has
    expired (unless ``allow_expired``: aborting one is fine)."""
    try:
        key = uuid.UUID(upload_id)
    except ValueError as exc:
        raise NotFound(f"no upload {upload_id!r}") from exc
    row = (await db.execute(query(key))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no upload {upload_id!r} for {owner}")
    if row.state != "open":
        raise BadRequest(f"upload {upload_id} is {row.state}")
    if not allow_expired and row.expires_at is not None and row.expires_at <= dt.datetime.now(dt.UTC):
        raise Gone(f"upload {upload_id} expired at {row.expires_at.isoformat()}; open a new upload session",
                   extra={"expired_at": row.expires_at.isoformat()})
    return row


#: A part is received into memory up to this size, into a temporary file beyond.
PART_SPOOL_MEMORY = 1 * 2**20


async def receive_part(row: SessionRow, part_number: int, request: Request, db: AsyncSession,
                       store: BlobStore) -> Response[dict]:
    """Store one part sent through the API (the local backend has no presigned URLs): streamed into
    a bounded spool, refused (413) as soon as it is longer than the part it claims to be."""
    expected = part_bytes(row, part_number)
    staging_key, storage_upload_id, size = row.staging_key, row.storage_upload_id, row.size
    await db.rollback()  # the session row lock is not needed while the part is received and written
    check_length(request, expected, f"part {part_number}", f" (its size in this upload of {size} bytes)")
    async with upload_slot(request):
        with tempfile.SpooledTemporaryFile(max_size=PART_SPOOL_MEMORY) as spool:
            async for chunk in request.stream():
                await asyncio.to_thread(spool.write, chunk)
            spool.seek(0)
            etag = await store.write_part(staging_key, part_number, spool, upload_id=storage_upload_id)
    return Response({"part_number": part_number, "etag": etag}, headers={"ETag": f'"{etag}"'})


def check_parts(row: SessionRow, parts: Sequence[tuple[int, str]]) -> None:
    """400 for a finalize that lists a part number ``row``'s file does not have."""
    for number, _ in parts:
        part_bytes(row, number)


async def abort_session(db: AsyncSession, store: BlobStore, row: SessionRow, upload_id: str) -> dict[str, str]:
    """Abandon the session: its parts are deleted and it ends 'aborted'."""
    await release_storage(store, row)
    row.state = "aborted"
    await db.commit()
    return {"id": upload_id, "state": "aborted"}


async def finalize_session(db: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore,
                           row: R, parts: Sequence[tuple[int, str]], publish: Publish[T], *,
                           max_header_bytes: int) -> T:
    """Join the parts of ``row``'s upload and ``publish`` the file, which must await the size, sha256
    and NaN/Inf check it is given before it keeps anything (that read overlaps its validation). The
    session ends 'done' or 'failed' (committed on its own), its storage released either way; the
    uploaded object itself stays only where ``publish`` says it kept it, or where a version may now
    reference it (the COMMIT that would have recorded it failed: :class:`.blob_commits.CommitOutcomeUnknown`)."""
    check_parts(row, parts)
    row.state = "finalizing"
    await db.commit()
    state = "failed"
    kept = False
    try:
        await store.complete_multipart(row.staging_key, row.storage_upload_id or "", parts)
        payload = staged_payload(store, row, asyncio.get_running_loop())
        check = asyncio.ensure_future(_check_uploaded(store, row, max_header_bytes))
        try:
            result, kept = await publish(payload, check)
        except CommitOutcomeUnknown:
            kept = True
            raise
        finally:
            await asyncio.wait([check])  # never delete the object under a running hash
            if not check.cancelled():
                check.exception()  # raised through publish, or an error of publish's came first
        state = "done"
        if not isinstance(store, LocalBlobStore):  # the parts went to S3 through presigned URLs
            S3_DIRECT_BYTES.labels("upload").inc(row.size)
    finally:
        await release_storage(store, row, keep=kept)
        async with sessionmaker() as db2, db2.begin():
            done = await db2.get(type(row), row.id)
            if done is not None:
                done.state = state
    return result


async def _check_uploaded(store: BlobStore, row: SessionRow, max_header_bytes: int) -> None:
    """The completed upload must be exactly the declared file (size and sha256), and hold no NaN or
    Inf values: both are checked in one read of the stored bytes."""
    loop = asyncio.get_running_loop()

    def read_at(offset: int, length: int) -> bytes:
        coro = store.read_staging_range(row.staging_key, offset, length)
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    scan = await asyncio.to_thread(scanner_for, read_at, row.size, row.filename, max_header_bytes=max_header_bytes)
    sha, size = await store.staging_sha256_and_size(row.staging_key, scan.feed if scan is not None else None)
    if size != row.size or sha != row.sha256:
        raise reject("the uploaded bytes are not the declared file", tensor=None,
                     expected=f"{row.size} bytes, sha256 {row.sha256}", found=f"{size} bytes, sha256 {sha}")
    if scan is not None and scan.problems():
        raise UploadRejected(scan.problems())


def staged_payload(store: BlobStore, row: SessionRow, loop: asyncio.AbstractEventLoop) -> Payload:
    """A payload over a completed, verified upload (``row.sha256`` is its true sha256): ranged reads
    from a worker thread; stored by promotion, or, for a direct upload, kept where it is."""
    sha256 = row.sha256
    if sha256 is None:
        raise ValueError("the upload's sha256 must be known (and verified) before publishing it")

    def read_at(offset: int, length: int) -> bytes:
        coro = store.read_staging_range(row.staging_key, offset, length)
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def promote(blobs: BlobStore) -> BlobInfo:
        if is_direct_key(row.staging_key):
            return BlobInfo(sha256, row.size, row.staging_key)
        return await blobs.promote_staging(row.staging_key, sha256)

    return Payload(row.filename, sha256, row.size, read_at, promote)


async def release_storage(store: BlobStore, row: SessionRow, *, keep: bool = False) -> None:
    """Drop what an ended session holds in storage: its open multipart upload (if any) and its object
    (staged, or a direct upload's blob unless ``keep``: a published file row records its key)."""
    await store.abort_multipart(row.staging_key, row.storage_upload_id or "")
    if is_direct_key(row.staging_key):
        if not keep:
            await store.delete(row.staging_key)
    else:
        await store.delete_staging(row.staging_key)


__all__ = ["SessionRow", "abort_session", "check_parts", "check_safetensors_size", "check_session_size",
           "declared_sha256", "finalize_session", "find_open", "open_session", "part_bytes", "part_count",
           "part_size_for", "receive_part", "release_storage", "staged_payload"]
