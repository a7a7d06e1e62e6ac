"""Files on their way into storage: a :class:`Payload` is a file's name, sha256 and size, a ranged
reader (validation reads headers through it), and how to store its bytes. Adapter pushes, base-model
weights, upload sessions and merge jobs all hand payloads to the code that publishes them; the ways
to make one from bytes in memory or from an uploaded form file are here too."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from litestar.datastructures import UploadFile

from sdk.safetensors_header import ReadAt

from ..storage import BlobInfo, BlobStore


@dataclass
class Payload:
    """One file to publish: its sha256/size, a sync ranged reader, and how to store it."""

    filename: str
    sha256: str
    size: int
    read_at: ReadAt
    #: coroutine function: stores the bytes (unless they are already where they stay) and returns
    #: their :class:`BlobInfo`, whose ``key`` the file row records
    store: Callable[[BlobStore], Awaitable[BlobInfo]]


def bytes_payload(filename: str, data: bytes) -> Payload:
    """A small file held in memory (config, README)."""
    def read_at(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    async def put(store: BlobStore) -> BlobInfo:
        return await store.put_file(io.BytesIO(data))

    return Payload(filename, hashlib.sha256(data).hexdigest(), len(data), read_at, put)


async def upload_payload(upload: UploadFile, filename: str) -> Payload:
    """A payload over an uploaded (spooled) form file: hashed once, read by range, stored from the start."""
    f = upload.file
    lock = threading.Lock()

    def digest() -> tuple[str, int]:
        with lock:
            f.seek(0)
            h, n = hashlib.sha256(), 0
            while chunk := f.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
            return h.hexdigest(), n

    def read_at(offset: int, length: int) -> bytes:
        with lock:
            f.seek(offset)
            return f.read(length)

    async def store(blobs: BlobStore) -> BlobInfo:
        with lock:
            f.seek(0)
        return await blobs.put_file(f)

    sha, size = await asyncio.to_thread(digest)
    return Payload(filename, sha, size, read_at, store)


__all__ = ["Payload", "bytes_payload", "upload_payload"]
