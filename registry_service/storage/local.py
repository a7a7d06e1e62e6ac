"""Blob store in a local directory: the embedded default, and the store of tests that need no S3.

Layout under the root (keys are paths relative to it)::

    blobs/sha256/ab/cdef…        content-addressed blobs
    staging/<name>               completed multipart uploads, waiting to be hashed and promoted
    multipart/<name>/upload-id   open multipart uploads: their id and their parts (part-00001…)
    tmp/                         spooled copies of non-seekable sources

Every file appears under its final name through ``os.replace`` of a temporary file written in the
same directory, so a reader never sees a partial blob. There are no presigned URLs: the API process
receives part bodies itself and calls :meth:`LocalBlobStore.write_part`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from .base import (
    CHUNK_SIZE,
    STAGING_PREFIX,
    BlobInfo,
    BlobNotFoundError,
    IntegrityError,
    MultipartUpload,
    PartData,
    Sink,
    Source,
    StorageError,
    StoredObject,
    UploadError,
    blob_key,
    blob_ref_key,
    check_part_number,
    check_read,
    check_sha256,
    check_staging_key,
    ensure_dir,
    hash_stream,
    new_staging_key,
    normalize_parts,
    open_source,
    resolve_range,
)

_UPLOAD_ID_FILE = "upload-id"
#: Top-level folders that hold no objects, so :meth:`LocalBlobStore.list_keys` skips them.
_INTERNAL_DIRS = frozenset({"multipart", "tmp"})


class _Hasher(Protocol):
    """What ``hashlib`` digests offer and :func:`_copy_hashing` needs."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` all at once: yield a temporary file beside it, fsync it and rename it over ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    ensure_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _copy_hashing(src: BinaryIO, dst: BinaryIO, digest: _Hasher) -> int:
    """Copy ``src`` to ``dst`` feeding ``digest``; return the number of bytes copied."""
    size = 0
    while chunk := src.read(CHUNK_SIZE):
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return size


async def _iter_file(path: Path, start: int, stop: int) -> AsyncIterator[bytes]:
    """Yield bytes ``[start, stop)`` of ``path`` in chunks, each read in a worker thread."""
    if stop <= start:
        return
    f = await asyncio.to_thread(open, path, "rb")
    try:
        await asyncio.to_thread(f.seek, start)
        remaining = stop - start
        while remaining > 0:
            chunk = await asyncio.to_thread(f.read, min(CHUNK_SIZE, remaining))
            if not chunk:
                raise StorageError(f"{path} ended {remaining} bytes early")
            remaining -= len(chunk)
            yield chunk
    finally:
        f.close()


class LocalBlobStore:
    """A :class:`~registry_service.storage.base.BlobStore` in a directory on this machine."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Use (and create if needed) the directory ``root``."""
        self.root = Path(root)
        for folder in ("blobs/sha256", "staging", "multipart", "tmp"):
            ensure_dir(self.root / folder)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------

    def _blob_path(self, ref: str) -> Path:
        return self.root / blob_ref_key(ref)

    def _staging_path(self, staging_key: str) -> Path:
        return self.root / check_staging_key(staging_key)

    def _multipart_dir(self, staging_key: str) -> Path:
        return self.root / "multipart" / check_staging_key(staging_key).removeprefix(STAGING_PREFIX)

    # -- blobs ---------------------------------------------------------------------------------

    async def put_file(self, source: Source) -> BlobInfo:
        """Hash ``source``, then write it under its content key unless a blob is already there."""
        return await asyncio.to_thread(self._put_file, source)

    def _put_file(self, source: Source) -> BlobInfo:
        with open_source(source, self.root / "tmp") as f:
            sha256, size = hash_stream(f)
            info = BlobInfo(sha256, size, blob_key(sha256))
            path = self.root / info.key
            if path.is_file():
                return info
            f.seek(0)
            digest = hashlib.sha256()
            with _atomic_file(path) as out:
                _copy_hashing(f, out, digest)
                if digest.hexdigest() != sha256:
                    raise IntegrityError("the source changed while it was being stored")
        return info

    async def ping(self) -> None:
        """The blob directory must exist and be writable."""
        folder = self.root / "blobs" / "sha256"
        if not await asyncio.to_thread(os.access, folder, os.W_OK | os.X_OK):
            raise StorageError(f"blob directory {folder} is missing or not writable")

    async def exists(self, ref: str) -> bool:
        """Whether the blob file exists."""
        return await asyncio.to_thread(self._blob_path(ref).is_file)

    async def size(self, ref: str) -> int:
        """Size of the blob file; :class:`BlobNotFoundError` if absent."""
        path = self._blob_path(ref)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {ref}") from None

    async def delete(self, ref: str) -> None:
        """Remove the blob file if present."""
        await asyncio.to_thread(self._blob_path(ref).unlink, missing_ok=True)

    async def open_range(self, ref: str, start: int = 0, end_inclusive: int | None = None) -> AsyncIterator[bytes]:
        """Check blob and range now; return an iterator over the bytes (the file opens on first use)."""
        size = await self.size(ref)
        start, stop = resolve_range(size, start, end_inclusive)
        return _iter_file(self._blob_path(ref), start, stop)

    async def read_range(self, ref: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start``."""
        return await asyncio.to_thread(self._read_file, self._blob_path(ref), start, length, f"no blob {ref}")

    @staticmethod
    def _read_file(path: Path, start: int, length: int, missing: str) -> bytes:
        try:
            with open(path, "rb") as f:
                start, stop = check_read(os.fstat(f.fileno()).st_size, start, length)
                f.seek(start)
                return f.read(stop - start)
        except FileNotFoundError:
            raise BlobNotFoundError(missing) from None

    async def presigned_get_url(self, ref: str, filename: str, expires: int = 3600) -> str | None:
        """Always ``None``: the API streams local blobs itself."""
        blob_ref_key(ref)
        return None

    async def list_keys(self, prefix: str = "blobs/") -> list[str]:
        """Keys of the files under ``prefix``, sorted; leftover temporary files show up too."""
        return await asyncio.to_thread(self._list_keys, prefix)

    def _list_keys(self, prefix: str) -> list[str]:
        if ".." in prefix.split("/"):
            raise ValueError(f"invalid key prefix: {prefix!r}")
        base = self.root / prefix.rpartition("/")[0]
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            here = Path(dirpath)
            if here == self.root:
                dirnames[:] = [d for d in dirnames if d not in _INTERNAL_DIRS]
            for name in filenames:
                key = (here / name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def list_objects(self, prefix: str, limit: int) -> list[StoredObject]:
        """Up to ``limit`` files under ``prefix`` with sizes and modification times, in key order."""
        return await asyncio.to_thread(self._list_objects, prefix, limit)

    def _list_objects(self, prefix: str, limit: int) -> list[StoredObject]:
        out: list[StoredObject] = []
        for key in self._list_keys(prefix):
            try:
                st = (self.root / key).stat()
            except FileNotFoundError:  # removed while listing
                continue
            out.append(StoredObject(key, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)))
            if len(out) >= limit:
                break
        return out

    # -- multipart uploads -----------------------------------------------------------------------

    async def start_multipart(self, upload_id_hint: str, *, direct: bool = False) -> MultipartUpload:
        """Create ``multipart/<name>/`` holding a fresh upload id (always staged: promotion is a rename)."""
        return await asyncio.to_thread(self._start_multipart, upload_id_hint)

    def _start_multipart(self, upload_id_hint: str) -> MultipartUpload:
        upload = MultipartUpload(new_staging_key(upload_id_hint), uuid.uuid4().hex)
        folder = self._multipart_dir(upload.staging_key)
        folder.mkdir(parents=True)
        (folder / _UPLOAD_ID_FILE).write_text(upload.upload_id)
        return upload

    def _open_upload(self, staging_key: str, upload_id: str | None) -> Path:
        """The folder of an open upload; :class:`UploadError` if there is none or the id differs."""
        folder = self._multipart_dir(staging_key)
        try:
            stored = (folder / _UPLOAD_ID_FILE).read_text()
        except FileNotFoundError:
            raise UploadError(f"no open multipart upload for {staging_key}") from None
        if upload_id is not None and upload_id != stored:
            raise UploadError(f"upload id {upload_id!r} does not match the open upload of {staging_key}")
        return folder

    async def presign_part(self, staging_key: str, upload_id: str, part_number: int, expires: int = 3600) -> str | None:
        """Always ``None``: clients send local parts to the API, which calls :meth:`write_part`."""
        check_staging_key(staging_key)
        check_part_number(part_number)
        return None

    async def write_part(
        self, staging_key: str, part_number: int, data: PartData, *, upload_id: str | None = None
    ) -> str:
        """Store part ``part_number`` (replacing an earlier one); return its ETag, ``"<md5 hex>"`` as on S3."""
        return await asyncio.to_thread(self._write_part, staging_key, part_number, data, upload_id)

    def _write_part(self, staging_key: str, part_number: int, data: PartData, upload_id: str | None) -> str:
        check_part_number(part_number)
        folder = self._open_upload(staging_key, upload_id)
        digest = hashlib.md5(usedforsecurity=False)
        with _atomic_file(folder / f"part-{part_number:05d}") as out:
            if isinstance(data, bytes | bytearray | memoryview):
                digest.update(data)
                out.write(data)
            else:
                _copy_hashing(data, out, digest)
        return f'"{digest.hexdigest()}"'

    async def complete_multipart(self, staging_key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
        """Concatenate the listed parts into ``staging/<name>``, checking each ETag, and drop the upload."""
        await asyncio.to_thread(self._complete_multipart, staging_key, upload_id, parts)

    def _complete_multipart(self, staging_key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
        folder = self._open_upload(staging_key, upload_id)
        ordered = normalize_parts(parts)
        with _atomic_file(self._staging_path(staging_key)) as out:
            for number, etag in ordered:
                digest = hashlib.md5(usedforsecurity=False)
                try:
                    with open(folder / f"part-{number:05d}", "rb") as part:
                        _copy_hashing(part, out, digest)
                except FileNotFoundError:
                    raise UploadError(f"part {number} of {staging_key} was never uploaded") from None
                if digest.hexdigest() != etag:
                    raise UploadError(f"part {number} of {staging_key} has ETag {digest.hexdigest()}, not {etag}")
        shutil.rmtree(folder, ignore_errors=True)

    async def abort_multipart(self, staging_key: str, upload_id: str) -> None:
        """Remove an open upload's folder; nothing happens if it is gone."""
        await asyncio.to_thread(self._abort_multipart, staging_key, upload_id)

    def _abort_multipart(self, staging_key: str, upload_id: str) -> None:
        try:
            folder = self._open_upload(staging_key, upload_id)
        except UploadError:
            if self._multipart_dir(staging_key).exists():
                raise  # the upload exists under another id: not ours to drop
            return
        shutil.rmtree(folder, ignore_errors=True)

    async def list_multipart_uploads(self, prefix: str = STAGING_PREFIX) -> list[MultipartUpload]:
        """Open uploads whose staging key starts with ``prefix``, sorted by key."""
        return await asyncio.to_thread(self._list_multipart_uploads, prefix)

    def _list_multipart_uploads(self, prefix: str) -> list[MultipartUpload]:
        uploads: list[MultipartUpload] = []
        for folder in sorted((self.root / "multipart").iterdir()):
            key = STAGING_PREFIX + folder.name
            id_file = folder / _UPLOAD_ID_FILE
            if key.startswith(prefix) and id_file.is_file():
                started = dt.datetime.fromtimestamp(id_file.stat().st_mtime, dt.UTC)
                uploads.append(MultipartUpload(key, id_file.read_text(), started))
        return uploads

    # -- staged objects -------------------------------------------------------------------------

    async def staging_sha256_and_size(self, staging_key: str, sink: Sink | None = None) -> tuple[str, int]:
        """Hash the staged file (feeding ``sink``)."""
        return await asyncio.to_thread(self._staging_sha256_and_size, staging_key, sink)

    def _staging_sha256_and_size(self, staging_key: str, sink: Sink | None) -> tuple[str, int]:
        try:
            with open(self._staging_path(staging_key), "rb") as f:
                return hash_stream(f, sink=sink)
        except FileNotFoundError:
            raise BlobNotFoundError(f"nothing staged under {staging_key}") from None

    async def read_staging_range(self, staging_key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start`` of the staged file."""
        path = self._staging_path(staging_key)
        return await asyncio.to_thread(self._read_file, path, start, length, f"nothing staged under {staging_key}")

    async def promote_staging(self, staging_key: str, sha256: str) -> BlobInfo:
        """Rename the staged file to its content key (or drop it if the blob exists)."""
        return await asyncio.to_thread(self._promote_staging, staging_key, sha256)

    def _promote_staging(self, staging_key: str, sha256: str) -> BlobInfo:
        sha256 = check_sha256(sha256)
        source = self._staging_path(staging_key)
        target = self._blob_path(sha256)
        if not source.is_file():
            raise BlobNotFoundError(f"nothing staged under {staging_key}")
        if target.is_file():
            source.unlink(missing_ok=True)
        else:
            ensure_dir(target.parent)
            os.replace(source, target)
        return BlobInfo(sha256, target.stat().st_size, blob_key(sha256))

    async def delete_staging(self, staging_key: str) -> None:
        """Remove the staged file if present."""
        await asyncio.to_thread(self._staging_path(staging_key).unlink, missing_ok=True)


__all__ = ["LocalBlobStore"]
