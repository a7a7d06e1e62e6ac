"""Upload-session mechanics shared by adapter and base-model uploads: part sizing, the URL per
part (presigned on S3, through the API on the local backend), and receiving a part."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Protocol

from litestar import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import reject
from ..settings import Settings
from ..storage import MIN_PART_SIZE, BlobInfo, BlobStore, MultipartUpload, is_direct_key
from .adapters.publish import Payload


class SessionRow(Protocol):
    """What the upload-session tables have in common."""

    filename: str
    size: int
    sha256: str | None
    staging_key: str
    storage_upload_id: str | None
    part_size: int


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


def part_size_for(size: int, settings: Settings) -> int:
    """Part size for a file of ``size`` bytes (S3 allows at most 10,000 parts of at least 5 MiB)."""
    return max(settings.upload_part_bytes, MIN_PART_SIZE, math.ceil(size / 10_000))


async def session_body(store: BlobStore, mp: MultipartUpload, upload_id: str, size: int, part: int, root: str,
                       settings: Settings) -> dict[str, Any]:
    """The answer to opening a session: one PUT URL per part, and where to finalize."""
    parts = []
    for n in range(1, max(1, math.ceil(size / part)) + 1):
        url = await store.presign_part(mp.staging_key, mp.upload_id, n, expires=settings.presign_expires_s)
        parts.append({"part_number": n, "url": url or f"{root}/parts/{n}", "method": "PUT",
                      "size": min(part, size - (n - 1) * part)})
    return {"id": upload_id, "part_size": part, "parts": parts, "finalize_url": f"{root}/finalize",
            "direct": parts[0]["url"] != f"{root}/parts/1"}


async def receive_part(row: SessionRow, part_number: int, request: Request, db: AsyncSession,
                       store: BlobStore) -> Response[dict]:
    """Store one part sent through the API (the local backend has no presigned URLs)."""
    body = await request.body()
    if len(body) > row.part_size:
        raise reject(f"part {part_number} is {len(body)} bytes; parts are at most {row.part_size}",
                     expected=str(row.part_size), found=str(len(body)))
    staging_key, storage_upload_id = row.staging_key, row.storage_upload_id
    await db.rollback()  # the session row lock is not needed while the part is written
    etag = await store.write_part(staging_key, part_number, body, upload_id=storage_upload_id)
    return Response({"part_number": part_number, "etag": etag}, headers={"ETag": f'"{etag}"'})
