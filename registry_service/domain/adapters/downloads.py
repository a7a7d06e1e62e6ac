"""Serving version files: HTTP Range support, or a redirect to a presigned S3 URL."""

from __future__ import annotations

import re

from litestar import Response
from litestar.response import Redirect, Stream
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ...db.models import Adapter, File
from ...errors import NotFound, RangeNotSatisfiable
from ...metrics import S3_DIRECT_BYTES
from ...storage import BlobNotFoundError, BlobStore, InvalidRangeError, content_disposition
from .caching import cache_control, file_etag, matches, not_modified, redirect_cache_control
from .reads import FileRow
from .small_files import is_small, small_file_bytes

#: ``bytes=start-end``; each bound at most 19 ASCII digits (beyond any file size), so int() never meets a
#: number too long to convert.
_RANGE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})\Z")
MEDIA = {".json": "application/json", ".md": "text/markdown; charset=utf-8", ".safetensors": "application/octet-stream"}


def parse_range(header: str | None, size: int) -> tuple[int, int | None] | None:
    """``(start, end_inclusive)`` of a single byte range, ``None`` for the whole file.

    Multiple ranges are answered with the whole file (allowed by RFC 9110); malformed or
    unsatisfiable ranges raise 416.
    """
    if not header:
        return None
    if "," in header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable(f"malformed Range header {header[:80]!r}; use 'bytes=start-end' "
                                  "(numbers of at most 19 digits)")
    first, last = m.group(1), m.group(2)
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiable("a suffix range of 0 bytes is unsatisfiable")
        return max(size - n, 0), size - 1
    start = int(first)
    end = int(last) if last else None
    if start >= size or (end is not None and end < start):
        raise RangeNotSatisfiable(f"range {header!r} is outside the file of {size} bytes")
    return start, end


async def count_download(sessionmaker: async_sessionmaker[AsyncSession], adapter_id: int, f: File | FileRow,
                         range_header: str | None, method: str) -> None:
    """Count a whole download of an adapter's weights (``adapter.downloads``): a GET of its safetensors
    file from the first byte (the later ranges of a split download, HEADs and configs are not counted)."""
    if method != "GET" or not f.filename.endswith(".safetensors"):
        return
    try:
        rng = parse_range(range_header, f.size)
    except RangeNotSatisfiable:
        return
    if rng is not None and rng[0] != 0:
        return
    async with sessionmaker() as db, db.begin():
        await db.execute(update(Adapter).where(Adapter.id == adapter_id).values(downloads=Adapter.downloads + 1))


def media_type(filename: str) -> str:
    """Content type by file extension."""
    for ext, media in MEDIA.items():
        if filename.endswith(ext):
            return media
    return "application/octet-stream"


async def serve_file(
    store: BlobStore,
    f: File | FileRow,
    range_header: str | None,
    *,
    redirect: bool,
    expires: int = 3600,
    head: bool = False,
    public: bool,
    fixed: bool,
    if_none_match: str | None = None,
) -> Response:
    """A 200/206 streaming response (or 302 to storage) for one version file, or 304 when ``if_none_match``
    names it. ``public``: everyone may read it alike; ``fixed``: addressed by commit or number (see
    :mod:`.caching`)."""
    etag = file_etag(f.sha256)
    cache = cache_control(public=public, fixed=fixed)
    if matches(if_none_match, etag):
        return not_modified(etag, cache, {"X-Content-Sha256": f.sha256})
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "X-Content-Sha256": f.sha256,
        "Content-Disposition": content_disposition(f.filename),
        "Cache-Control": cache,
    }
    if redirect and not head:
        url = await store.presigned_get_url(f.storage_key, f.filename, expires=expires)
        if url:
            S3_DIRECT_BYTES.labels("download").inc(f.size)
            return Redirect(url, status_code=302, headers={
                "X-Content-Sha256": f.sha256, "ETag": etag,
                "Cache-Control": redirect_cache_control(public=public, fixed=fixed, expires_s=expires)})
    rng = parse_range(range_header, f.size)
    start, end = (0, None) if rng is None else rng
    stop = f.size - 1 if end is None else min(end, f.size - 1)
    length = max(stop - start + 1, 0)
    headers["Content-Length"] = str(length)
    status = 200
    if rng is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop}/{f.size}"
    if head:
        return Response(b"", status_code=status, headers=headers, media_type=media_type(f.filename))
    try:
        if is_small(f):  # configs and READMEs: from memory after the first time
            data = await small_file_bytes(store, f)
            return Response(data[start:stop + 1], status_code=status, headers=headers,
                            media_type=media_type(f.filename))
        chunks = await store.open_range(f.storage_key, start, stop if f.size else None)
    except BlobNotFoundError as exc:
        raise NotFound(f"the bytes of {f.filename} are missing from storage") from exc
    except InvalidRangeError as exc:
        raise RangeNotSatisfiable(str(exc)) from exc
    return Stream(chunks, status_code=status, headers=headers, media_type=media_type(f.filename))
