"""The blob store contract, its value types and errors, and the helpers both backends share.

Blobs are content-addressed: a file is stored once, under ``blobs/sha256/ab/cdef…`` (the first two
hex digits of its sha256 as a folder, the other 62 as the name), so identical files uploaded to
different versions share one object. Large uploads first land under a *staging* key
(``staging/<hint>-<random>``), are hashed there, then promoted to their content key. On S3, where
promotion would copy every byte, a large upload instead lands under an *upload blob key*
(``blobs/uploads/<random>``) and stays there: the database records that key for the file
(``storage_key``), so a blob is named by its sha256 and found by its recorded key.

Every method of :class:`BlobStore` is async; the backends run their blocking I/O (boto3, file
reads) in worker threads so the event loop never waits on storage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, TypeAlias, runtime_checkable
from urllib.parse import quote

BLOB_PREFIX = "blobs/sha256/"
UPLOAD_BLOB_PREFIX = "blobs/uploads/"
STAGING_PREFIX = "staging/"
#: Bytes per read when hashing, copying and streaming.
CHUNK_SIZE = 1024 * 1024
#: S3 refuses multipart parts below this size, except the last one.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_STAGING_KEY_RE = re.compile(r"staging/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_UPLOAD_BLOB_KEY_RE = re.compile(r"blobs/uploads/[0-9a-f]{32}")

#: What :meth:`BlobStore.put_file` accepts: a path, or a binary file object read to its end.
Source: TypeAlias = str | os.PathLike[str] | BinaryIO
#: A part's bytes for :meth:`BlobStore.write_part`.
PartData: TypeAlias = bytes | bytearray | memoryview | BinaryIO
#: Called with every chunk of an object, in order, as it is hashed (a check that shares the read).
Sink: TypeAlias = Callable[[bytes], None]


class StorageError(Exception):
    """Base of every error the blob store raises on purpose."""


class BlobNotFoundError(StorageError, LookupError):
    """No blob (or staged object) under that sha256 or key."""


class InvalidRangeError(StorageError, ValueError):
    """A byte range that the blob cannot satisfy (HTTP 416)."""


class UploadError(StorageError):
    """A multipart upload cannot proceed: unknown upload id, wrong part ETag, part too small…"""


class IntegrityError(StorageError):
    """The bytes written are not the bytes hashed (the source changed while being stored)."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob: its sha256 (64 lowercase hex digits), its size in bytes and its storage key."""

    sha256: str
    size: int
    key: str


@dataclass(frozen=True, slots=True)
class MultipartUpload:
    """An open multipart upload: where it will land (``staging_key``), the backend's id for it, and
    when it was started (when the backend says; the blob collection leaves young ones alone)."""

    staging_key: str
    upload_id: str
    initiated: dt.datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object in storage as a listing shows it: key, size and last modification (UTC)."""

    key: str
    size: int
    modified: dt.datetime


def check_sha256(sha256: str) -> str:
    """Return ``sha256`` lowercased, or raise ``ValueError`` if it is not 64 hex digits."""
    value = sha256.lower()
    if not _SHA256_RE.fullmatch(value):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return value


def blob_key(sha256: str) -> str:
    """The content key of a blob: ``blobs/sha256/ab/cdef…`` for sha256 ``abcdef…``."""
    value = check_sha256(sha256)
    return f"{BLOB_PREFIX}{value[:2]}/{value[2:]}"


def sha256_from_key(key: str) -> str:
    """Inverse of :func:`blob_key`; ``ValueError`` for any other key."""
    if key.startswith(BLOB_PREFIX):
        folder, _, rest = key[len(BLOB_PREFIX) :].partition("/")
        if len(folder) == 2 and _SHA256_RE.fullmatch(folder + rest):
            return folder + rest
    raise ValueError(f"not a blob key: {key!r}")


def check_staging_key(staging_key: str) -> str:
    """Return ``staging_key`` if it is a well-formed ``staging/<name>`` key, else raise ``ValueError``.

    Keys come back from the database and, for the local backend, become paths, so nothing outside
    ``staging/`` (``..``, slashes, hidden names) is let through.
    """
    if not _STAGING_KEY_RE.fullmatch(staging_key):
        raise ValueError(f"not a staging key: {staging_key!r}")
    return staging_key


def new_upload_blob_key() -> str:
    """A fresh upload blob key, ``blobs/uploads/<32 random hex>``: where a direct upload lands and stays."""
    return f"{UPLOAD_BLOB_PREFIX}{uuid.uuid4().hex}"


def is_direct_key(key: str) -> bool:
    """Whether an upload's key is an upload blob key (a direct upload) rather than a staging key."""
    return key.startswith(UPLOAD_BLOB_PREFIX)


def check_upload_key(key: str) -> str:
    """Return ``key`` if a multipart upload may target it: a staging key or an upload blob key."""
    if is_direct_key(key):
        if not _UPLOAD_BLOB_KEY_RE.fullmatch(key):
            raise ValueError(f"not an upload blob key: {key!r}")
        return key
    return check_staging_key(key)


def blob_ref_key(ref: str) -> str:
    """The storage key of a blob reference: a sha256 (its content key), a content key, or an upload
    blob key (as recorded in ``storage_key``); ``ValueError`` for anything else."""
    if _SHA256_RE.fullmatch(ref.lower()):
        return blob_key(ref)
    if ref.startswith(BLOB_PREFIX):
        sha256_from_key(ref)
        return ref
    if _UPLOAD_BLOB_KEY_RE.fullmatch(ref):
        return ref
    raise ValueError(f"not a blob reference: {ref!r}")


def new_staging_key(upload_id_hint: str) -> str:
    """A fresh staging key: ``staging/<sanitized hint>-<32 random hex>`` (at most 105 characters)."""
    hint = re.sub(r"[^A-Za-z0-9._-]+", "-", upload_id_hint).strip(".-")[:64] or "upload"
    return f"{STAGING_PREFIX}{hint}-{uuid.uuid4().hex}"


def check_part_number(part_number: int) -> int:
    """S3 numbers parts 1…10000; the local backend follows the same rule."""
    if not 1 <= part_number <= MAX_PART_NUMBER:
        raise ValueError(f"part number must be in 1..{MAX_PART_NUMBER}, got {part_number}")
    return part_number


def normalize_parts(parts: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """Parts sorted by number with unquoted ETags; ``UploadError`` when empty or duplicated."""
    if not parts:
        raise UploadError("a multipart upload needs at least one part")
    ordered = sorted((check_part_number(int(n)), etag.strip().strip('"')) for n, etag in parts)
    numbers = [n for n, _ in ordered]
    if len(set(numbers)) != len(numbers):
        raise UploadError(f"duplicate part numbers in {numbers}")
    return ordered


def resolve_range(size: int, start: int, end_inclusive: int | None) -> tuple[int, int]:
    """Turn ``start``/``end_inclusive`` into a half-open ``(start, stop)`` inside a blob of ``size`` bytes.

    ``end_inclusive=None`` means "to the end"; an end past the blob is clamped, as HTTP does. A
    start at or past the end is unsatisfiable, except ``start == size`` with no end, which is the
    empty tail (so a whole empty blob can be streamed).
    """
    if start < 0:
        raise InvalidRangeError(f"range start {start} is negative")
    if end_inclusive is not None and end_inclusive < start:
        raise InvalidRangeError(f"range end {end_inclusive} is before its start {start}")
    if start > size or (start == size and end_inclusive is not None):
        raise InvalidRangeError(f"range start {start} is past the end of a {size}-byte blob")
    stop = size if end_inclusive is None else min(end_inclusive + 1, size)
    return start, stop


def check_read(size: int, start: int, length: int) -> tuple[int, int]:
    """Half-open bounds of a ``read_range``: truncated at the end like ``file.read``; a start past it raises."""
    if start < 0 or length < 0:
        raise InvalidRangeError(f"invalid read of {length} bytes at {start}")
    if start > size:
        raise InvalidRangeError(f"read at {start} is past the end of a {size}-byte blob")
    return start, min(start + length, size)


def hash_stream(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE, sink: Sink | None = None) -> tuple[str, int]:
    """sha256 hex digest and size of what ``fileobj`` yields from its position to its end (each
    chunk also goes to ``sink``, in order, when given)."""
    digest = hashlib.sha256()
    size = 0
    while chunk := fileobj.read(chunk_size):
        digest.update(chunk)
        if sink is not None:
            sink(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _rewindable_at_zero(fileobj: BinaryIO) -> bool:
    try:
        return fileobj.seekable() and fileobj.tell() == 0
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def open_source(source: Source, spool_dir: str | os.PathLike[str] | None = None) -> Iterator[BinaryIO]:
    """Yield a seekable binary file positioned at 0 holding the bytes of ``source``.

    A path is opened (and closed afterwards); a file object at position 0 that can seek is used as
    is and left open. Anything else (a pipe, a request stream, a file object not at 0) is first
    copied into an anonymous temporary file in ``spool_dir``, so the backends can read it twice:
    once to hash, once to store; boto3 also rewinds bodies to 0 when it retries.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            yield f
        return
    if _rewindable_at_zero(source):
        yield source
        return
    with tempfile.TemporaryFile(dir=spool_dir) as spooled:
        shutil.copyfileobj(source, spooled, CHUNK_SIZE)
        spooled.seek(0)
        yield spooled  # type: ignore[misc]


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A ``Content-Disposition`` value naming ``filename`` (RFC 6266, with ``filename*`` for non-ASCII)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def ensure_dir(path: Path) -> Path:
    """Create ``path`` and its parents if missing; return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed blob storage: the local directory backend and the S3 backend.

    Blobs are immutable and named by their sha256. Uploads through the API use :meth:`put_file`;
    large files use a multipart upload into a staging key (clients PUT parts to presigned URLs on
    S3; on the local backend the API process receives the part bodies and calls
    :meth:`write_part`), then :meth:`staging_sha256_and_size` and :meth:`promote_staging`, or
    (``direct=True`` on S3) into an upload blob key where the blob stays.

    The blob methods take a *ref*: a sha256 (the content key) or a blob key recorded in a file
    row's ``storage_key`` (see :func:`blob_ref_key`).
    """

    async def put_file(self, source: Source) -> BlobInfo:
        """Hash ``source`` while streaming it and store it under its content key, unless already there.

        The blob appears under its key all at once or not at all. A file object is read to its end.
        """
        ...

    async def exists(self, ref: str) -> bool:
        """Whether the blob is stored."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StorageError` unless the storage answers and can be written (readiness probe)."""
        ...

    async def size(self, ref: str) -> int:
        """Size in bytes of a stored blob; :class:`BlobNotFoundError` if absent."""
        ...

    async def delete(self, ref: str) -> None:
        """Remove the blob; nothing happens if it is absent. Callers make sure no file row uses it."""
        ...

    async def open_range(self, ref: str, start: int = 0, end_inclusive: int | None = None) -> AsyncIterator[bytes]:
        """Check the blob and the range now, and return an async iterator over the range's bytes.

        Awaiting raises :class:`BlobNotFoundError` / :class:`InvalidRangeError` before any byte is
        sent, so an HTTP handler can still answer 404 / 416. The range follows :func:`resolve_range`.
        Iterate it to the end or ``aclose()`` it to release the underlying file or connection.
        """
        ...

    async def read_range(self, ref: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start`` (fewer at the end of the blob, like ``file.read``)."""
        ...

    async def presigned_get_url(self, ref: str, filename: str, expires: int = 3600) -> str | None:
        """A time-limited URL that downloads the blob as ``filename``; ``None`` when the backend has none."""
        ...

    async def start_multipart(self, upload_id_hint: str, *, direct: bool = False) -> MultipartUpload:
        """Open a multipart upload into a fresh staging key; ``upload_id_hint`` only decorates the key.

        With ``direct=True``, a backend whose promotion would copy every byte (S3) opens the upload
        on a fresh upload blob key instead (:func:`is_direct_key` is then true for ``staging_key``):
        the completed object is the blob, which the caller verifies, records by that key in the
        file rows, or deletes. The staging methods below accept such keys;
        ``promote_staging``/``delete_staging`` never get them.
        """
        ...

    async def presign_part(self, staging_key: str, upload_id: str, part_number: int, expires: int = 3600) -> str | None:
        """A URL the client PUTs part ``part_number`` to (its response's ``ETag`` header identifies the part).

        ``None`` on the local backend: there the API process takes the part and calls :meth:`write_part`.
        """
        ...

    async def write_part(
        self, staging_key: str, part_number: int, data: PartData, *, upload_id: str | None = None
    ) -> str:
        """Store one part through this process and return its ETag (S3 needs ``upload_id``)."""
        ...

    async def complete_multipart(self, staging_key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
        """Join the listed ``(part_number, etag)`` parts into the staged object; :class:`UploadError` if wrong."""
        ...

    async def abort_multipart(self, staging_key: str, upload_id: str) -> None:
        """Drop an open multipart upload and its parts; nothing happens if it is already gone."""
        ...

    async def list_multipart_uploads(self, prefix: str = STAGING_PREFIX) -> list[MultipartUpload]:
        """Open multipart uploads (for cleaning up abandoned ones)."""
        ...

    async def staging_sha256_and_size(self, staging_key: str, sink: Sink | None = None) -> tuple[str, int]:
        """sha256 and size of a staged object, computed by streaming it; every chunk also goes to
        ``sink`` in order (called in a worker thread)."""
        ...

    async def read_staging_range(self, staging_key: str, start: int, length: int) -> bytes:
        """:meth:`read_range` on a staged object, to validate it (e.g. its safetensors header) before promotion."""
        ...

    async def promote_staging(self, staging_key: str, sha256: str) -> BlobInfo:
        """Move a staged object to the content key of ``sha256`` and delete the staged copy.

        ``sha256`` must come from :meth:`staging_sha256_and_size`: it is trusted, not recomputed.
        If the blob already exists the staged copy is just deleted.
        """
        ...

    async def delete_staging(self, staging_key: str) -> None:
        """Delete a staged object; nothing happens if it is absent."""
        ...

    async def list_keys(self, prefix: str = "blobs/") -> list[str]:
        """All object keys under ``prefix``, sorted (open multipart uploads are not objects)."""
        ...

    async def list_objects(self, prefix: str, limit: int) -> list[StoredObject]:
        """Up to ``limit`` objects under ``prefix`` with their sizes and modification times (for the
        blob collection), in key order."""
        ...


__all__ = [
    "BLOB_PREFIX",
    "CHUNK_SIZE",
    "MAX_PART_NUMBER",
    "MIN_PART_SIZE",
    "STAGING_PREFIX",
    "UPLOAD_BLOB_PREFIX",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobStore",
    "IntegrityError",
    "InvalidRangeError",
    "MultipartUpload",
    "PartData",
    "Sink",
    "Source",
    "StorageError",
    "StoredObject",
    "UploadError",
    "blob_key",
    "blob_ref_key",
    "check_part_number",
    "check_read",
    "check_sha256",
    "check_staging_key",
    "content_disposition",
    "ensure_dir",
    "hash_stream",
    "new_staging_key",
    "new_upload_blob_key",
    "normalize_parts",
    "open_source",
    "resolve_range",
    "sha256_from_key",
]
