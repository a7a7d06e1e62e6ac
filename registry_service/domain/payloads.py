"""Files on their way into storage: a :class:`Payload` is a file's name, sha256 and size, a ranged
reader (validation reads headers through it), and how to store its bytes. Adapter pushes, base-model
weights, upload sessions and merge jobs all hand payloads to the code that publishes them; the ways
to make one from bytes in memory, from an uploaded form file or from a local file are here too.

The pass that hashes a safetensors payload also scans its tensors for NaN and Inf
(:mod:`sdk.nonfinite`); what it finds is in :attr:`Payload.problems`, and publishing refuses it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from litestar.datastructures import UploadFile

from sdk.nonfinite import scanner_for
from sdk.problems import Problem
from sdk.safetensors_header import ReadAt, bytes_reader, file_reader

from ..storage import BlobInfo, BlobStore
from ..storage.base import hash_stream


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
    #: what the hashing pass found in the tensors (NaN/Inf), for safetensors payloads
    problems: list[Problem] = field(default_factory=list)


def hash_and_scan(f: BinaryIO, filename: str, max_header_bytes: int | None) -> tuple[str, int, list[Problem]]:
    """sha256, size and non-finite tensors of the seekable file ``f`` in one read (``max_header_bytes``
    None: not a safetensors file, nothing to scan)."""
    scan = None
    if max_header_bytes is not None:
        size = f.seek(0, io.SEEK_END)
        scan = scanner_for(file_reader(f), size, filename, max_header_bytes=max_header_bytes)
    f.seek(0)
    sha, size = hash_stream(f, sink=scan.feed if scan is not None else None)
    return sha, size, scan.problems() if scan is not None else []


def bytes_payload(filename: str, data: bytes, *, max_header_bytes: int | None = None) -> Payload:
    """A file held in memory (config, README, a Hub commit's weights: with ``max_header_bytes`` it is
    a safetensors file, scanned for NaN/Inf)."""
    def read_at(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    async def put(store: BlobStore) -> BlobInfo:
        return await store.put_file(io.BytesIO(data))

    problems: list[Problem] = []
    if max_header_bytes is not None:
        scan = scanner_for(bytes_reader(data), len(data), filename, max_header_bytes=max_header_bytes)
        if scan is not None:
            scan.feed(data)
            problems = scan.problems()
    return Payload(filename, hashlib.sha256(data).hexdigest(), len(data), read_at, put, problems)


async def upload_payload(upload: UploadFile, filename: str, *, max_header_bytes: int | None = None) -> Payload:
    """A payload over an uploaded (spooled) form file: hashed (and, a safetensors file, scanned) once,
    read by range, stored from the start."""
    f = upload.file
    lock = threading.Lock()

    def digest() -> tuple[str, int, list[Problem]]:
        with lock:
            return hash_and_scan(f, filename, max_header_bytes)  # type: ignore[arg-type]

    def read_at(offset: int, length: int) -> bytes:
        with lock:
            f.seek(offset)
            return f.read(length)

    async def store(blobs: BlobStore) -> BlobInfo:
        with lock:
            f.seek(0)
        return await blobs.put_file(f)

    sha, size, problems = await asyncio.to_thread(digest)
    return Payload(filename, sha, size, read_at, store, problems)


def file_payload(path: Path, filename: str, *, max_header_bytes: int | None = None) -> Payload:
    """A local file (a merge result) as a payload: hashed (and scanned) once, read by range, stored
    from the path. Synchronous: call it in a worker thread."""
    with open(path, "rb") as fh:
        sha, size, problems = hash_and_scan(fh, filename, max_header_bytes)

    def read_at(offset: int, length: int) -> bytes:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    async def put(store: BlobStore) -> BlobInfo:
        return await store.put_file(path)

    return Payload(filename, sha, size, read_at, put, problems)


__all__ = ["Payload", "bytes_payload", "file_payload", "hash_and_scan", "upload_payload"]
