"""Blob store on any S3-compatible server (AWS S3, MinIO, SeaweedFS) through boto3.

boto3 is synchronous, so each operation runs in a worker thread (``asyncio.to_thread``); boto3
clients are thread-safe. Addressing is path-style (``endpoint/bucket/key``), which every
S3-compatible server understands. Credentials come from boto3's usual chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles).

Integrity: :meth:`S3BlobStore.put_file` sends the sha256 it computed as ``x-amz-checksum-sha256``,
so the server refuses the object if the bytes it received differ (files up to
``single_put_limit``; larger ones go up as a managed multipart upload). Objects only become
visible once complete, so a content key never shows a partial blob.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from itertools import islice
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .base import (
    CHUNK_SIZE,
    STAGING_PREFIX,
    BlobInfo,
    BlobNotFoundError,
    InvalidRangeError,
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
    check_upload_key,
    content_disposition,
    hash_stream,
    new_staging_key,
    new_upload_blob_key,
    normalize_parts,
    open_source,
    resolve_range,
)

#: Range size and read-ahead depth when hashing large staged objects (at most 64 MiB in memory):
#: fewer, larger ranges hash a 256 MiB upload about a fifth faster than 4 MiB x 8 on a small machine.
_HASH_RANGE = 16 * 1024 * 1024
_HASH_AHEAD = 4

#: boto3 clients are classes generated at run time (no stubs are installed), hence ``Any``.
S3Client = Any

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
_UPLOAD_ERRORS = frozenset(
    {"InvalidPart", "InvalidPartOrder", "NoSuchUpload", "EntityTooSmall", "MalformedXML", "InvalidArgument"}
)
_GIB = 1024**3


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', '?')}: {error.get('Message', '')}".strip()


#: Seconds to wait for a connection to storage (botocore's default, 60, would hold a request for
#: minutes across retries before an unreachable endpoint answers 503).
CONNECT_TIMEOUT_S = 5


def _client_config(max_pool_connections: int) -> Config:
    """Path-style SigV4, and checksums only where S3 requires them (older S3-compatible servers
    reject the CRC trailers newer botocore adds by default)."""
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=CONNECT_TIMEOUT_S,
        retries={"max_attempts": 4, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def make_s3_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    *,
    max_pool_connections: int = 32,
    session: boto3.session.Session | None = None,
) -> S3Client:
    """A boto3 S3 client configured as :class:`S3BlobStore` needs it (path-style, SigV4).

    Creating a client costs tens of milliseconds (boto3 loads its service model), so share one.
    """
    return (session or boto3.session.Session()).client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=_client_config(max_pool_connections)
    )


class S3BlobStore:
    """A :class:`~registry_service.storage.base.BlobStore` in one S3 bucket."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        public_endpoint_url: str | None = None,
        single_put_limit: int = 5 * _GIB,
        max_pool_connections: int = 32,
        client: S3Client | None = None,
    ) -> None:
        """Connect to ``bucket`` at ``endpoint_url`` (``None``: AWS) in ``region``.

        ``public_endpoint_url``: the address clients reach the server at, when it differs from the
        one this process uses (e.g. ``http://minio:9000`` inside docker-compose vs.
        ``http://localhost:9000`` outside); presigned URLs are signed for it. Files up to
        ``single_put_limit`` bytes (S3 allows 5 GiB) are stored with one checksummed PUT. ``client``:
        a shared client from :func:`make_s3_client`, used instead of making one (``endpoint_url``
        and ``region`` are then taken from it).
        """
        self.bucket = bucket
        self.single_put_limit = min(single_put_limit, 5 * _GIB)
        self._client: S3Client = client or make_s3_client(
            endpoint_url, region, max_pool_connections=max_pool_connections
        )
        self.endpoint_url: str = self._client.meta.endpoint_url
        self._presign_client: S3Client = self._client
        if public_endpoint_url:
            self._presign_client = make_s3_client(
                public_endpoint_url, self._client.meta.region_name, max_pool_connections=max_pool_connections
            )
        # Server-side copies up to 5 GiB are one CopyObject; larger files use 64 MiB parts.
        self._transfer = TransferConfig(multipart_threshold=5 * _GIB, multipart_chunksize=64 * 1024 * 1024)

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def client(self) -> S3Client:
        """The boto3 client (for the odd operation this class does not wrap)."""
        return self._client

    # -- bucket --------------------------------------------------------------------------------

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (call once at start-up)."""
        await asyncio.to_thread(self._ensure_bucket)

    async def ping(self) -> None:
        """The bucket must answer (HEAD bucket)."""
        try:
            await asyncio.to_thread(self._client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            raise StorageError(f"bucket {self.bucket}: {_message(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 is unreachable: {exc}") from exc

    def _ensure_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND:
                raise StorageError(f"cannot reach bucket {self.bucket}: {_message(exc)}") from exc
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        region = self._client.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":
                raise StorageError(f"cannot create bucket {self.bucket}: {_message(exc)}") from exc

    # -- small helpers -------------------------------------------------------------------------

    def _head_size(self, key: str) -> int | None:
        """Size of the object at ``key``, ``None`` if there is none."""
        try:
            return int(self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise StorageError(f"HEAD {key}: {_message(exc)}") from exc

    def _size(self, ref: str) -> int:
        size = self._head_size(blob_ref_key(ref))
        if size is None:
            raise BlobNotFoundError(f"no blob {ref}")
        return size

    # -- blobs ---------------------------------------------------------------------------------

    async def put_file(self, source: Source) -> BlobInfo:
        """Hash ``source``, then upload it to its content key unless that object already exists."""
        return await asyncio.to_thread(self._put_file, source)

    def _put_file(self, source: Source) -> BlobInfo:
        with open_source(source) as f:
            sha256, size = hash_stream(f)
            info = BlobInfo(sha256, size, blob_key(sha256))
            if self._head_size(info.key) is not None:
                return info
            f.seek(0)
            try:
                if size <= self.single_put_limit:
                    self._client.put_object(
                        Bucket=self.bucket,
                        Key=info.key,
                        Body=f,
                        ContentLength=size,
                        ContentType="application/octet-stream",
                        ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
                    )
                else:
                    self._client.upload_fileobj(
                        f,
                        self.bucket,
                        info.key,
                        ExtraArgs={"ContentType": "application/octet-stream"},
                        Config=self._transfer,
                    )
            except ClientError as exc:
                raise StorageError(f"PUT {info.key}: {_message(exc)}") from exc
        return info

    async def exists(self, ref: str) -> bool:
        """Whether the blob's object exists (one HEAD)."""
        key = blob_ref_key(ref)
        return await asyncio.to_thread(self._head_size, key) is not None

    async def size(self, ref: str) -> int:
        """Size of the blob; :class:`BlobNotFoundError` if absent."""
        return await asyncio.to_thread(self._size, ref)

    async def delete(self, ref: str) -> None:
        """Delete the blob's object (S3 deletes are idempotent)."""
        key = blob_ref_key(ref)
        await asyncio.to_thread(self._delete_key, key)

    def _delete_key(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND:
                raise StorageError(f"DELETE {key}: {_message(exc)}") from exc

    async def open_range(self, ref: str, start: int = 0, end_inclusive: int | None = None) -> AsyncIterator[bytes]:
        """HEAD the blob and check the range now; the ranged GET starts on first iteration."""
        size = await self.size(ref)
        start, stop = resolve_range(size, start, end_inclusive)
        return self._iter_object(blob_ref_key(ref), start, stop)

    async def _iter_object(self, key: str, start: int, stop: int) -> AsyncIterator[bytes]:
        if stop <= start:
            return
        try:
            response = await asyncio.to_thread(
                self._client.get_object, Bucket=self.bucket, Key=key, Range=f"bytes={start}-{stop - 1}"
            )
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise BlobNotFoundError(f"{key} disappeared") from exc
            raise StorageError(f"GET {key}: {_message(exc)}") from exc
        body = response["Body"]
        try:
            remaining = stop - start
            while remaining > 0:
                chunk = await asyncio.to_thread(body.read, min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise StorageError(f"{key} ended {remaining} bytes early")
                remaining -= len(chunk)
                yield chunk
        finally:
            body.close()

    async def read_range(self, ref: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start``: one ranged GET (plus a HEAD at or past the end)."""
        return await asyncio.to_thread(self._read_key, blob_ref_key(ref), start, length, f"no blob {ref}")

    def _read_key(self, key: str, start: int, length: int, missing: str) -> bytes:
        """Bytes ``[start, start + length)`` of object ``key``, truncated at its end (see ``check_read``)."""
        if start < 0 or length < 0:
            raise InvalidRangeError(f"invalid read of {length} bytes at {start}")
        if length > 0:
            try:
                response = self._client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
                )
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    raise BlobNotFoundError(missing) from exc
                if _code(exc) != "InvalidRange":
                    raise StorageError(f"GET {key}: {_message(exc)}") from exc
                # The start is at or past the end: b"" exactly at the end, an error beyond (below).
            else:
                with closing(response["Body"]) as body:
                    return body.read()
        size = self._head_size(key)
        if size is None:
            raise BlobNotFoundError(missing)
        check_read(size, start, length)
        return b""

    async def presigned_get_url(self, ref: str, filename: str, expires: int = 3600) -> str | None:
        """A presigned GET (valid ``expires`` seconds) whose response downloads as ``filename``.

        Signing happens offline: the URL is returned even if the blob is absent (it then answers 404).
        """
        return self._presign_client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": blob_ref_key(ref),
                "ResponseContentDisposition": content_disposition(filename),
                "ResponseContentType": "application/octet-stream",
            },
            ExpiresIn=expires,
        )

    async def list_keys(self, prefix: str = "blobs/") -> list[str]:
        """All object keys under ``prefix``, sorted."""
        return await asyncio.to_thread(self._list_keys, prefix)

    def _list_keys(self, prefix: str) -> list[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    async def list_objects(self, prefix: str, limit: int) -> list[StoredObject]:
        """Up to ``limit`` objects under ``prefix``, with sizes and modification times, in key order."""
        return await asyncio.to_thread(self._list_objects, prefix, limit)

    def _list_objects(self, prefix: str, limit: int) -> list[StoredObject]:
        paginator = self._client.get_paginator("list_objects_v2")
        out: list[StoredObject] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, PaginationConfig={"MaxItems": limit}):
            out += [StoredObject(o["Key"], int(o["Size"]), o["LastModified"]) for o in page.get("Contents", [])]
        return out[:limit]

    # -- multipart uploads ---------------------------------------------------------------------

    async def start_multipart(self, upload_id_hint: str, *, direct: bool = False) -> MultipartUpload:
        """CreateMultipartUpload on a fresh staging key, or with ``direct`` on a fresh upload blob key
        (the blob stays where it was uploaded: no server-side copy, see the protocol)."""
        return await asyncio.to_thread(self._start_multipart, upload_id_hint, direct)

    def _start_multipart(self, upload_id_hint: str, direct: bool = False) -> MultipartUpload:
        staging_key = new_upload_blob_key() if direct else new_staging_key(upload_id_hint)
        response = self._client.create_multipart_upload(
            Bucket=self.bucket, Key=staging_key, ContentType="application/octet-stream"
        )
        return MultipartUpload(staging_key, response["UploadId"])

    async def presign_part(self, staging_key: str, upload_id: str, part_number: int, expires: int = 3600) -> str | None:
        """A presigned UploadPart URL for a plain ``PUT`` of the part's bytes."""
        return self._presign_client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self.bucket,
                "Key": check_upload_key(staging_key),
                "UploadId": upload_id,
                "PartNumber": check_part_number(part_number),
            },
            ExpiresIn=expires,
        )

    async def write_part(
        self, staging_key: str, part_number: int, data: PartData, *, upload_id: str | None = None
    ) -> str:
        """UploadPart through this process (for clients that cannot reach S3); returns the part's ETag."""
        if upload_id is None:
            raise ValueError("S3 parts need the upload id")
        return await asyncio.to_thread(self._write_part, staging_key, part_number, data, upload_id)

    def _write_part(self, staging_key: str, part_number: int, data: PartData, upload_id: str) -> str:
        body = bytes(data) if isinstance(data, bytearray | memoryview) else data
        try:
            response = self._client.upload_part(
                Bucket=self.bucket,
                Key=check_upload_key(staging_key),
                UploadId=upload_id,
                PartNumber=check_part_number(part_number),
                Body=body,
            )
        except ClientError as exc:
            raise UploadError(f"part {part_number} of {staging_key}: {_message(exc)}") from exc
        return str(response["ETag"])

    async def complete_multipart(self, staging_key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
        """CompleteMultipartUpload; S3's refusals (bad ETag, part under 5 MiB…) become :class:`UploadError`."""
        await asyncio.to_thread(self._complete_multipart, staging_key, upload_id, parts)

    def _complete_multipart(self, staging_key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
        ordered = normalize_parts(parts)
        try:
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=check_upload_key(staging_key),
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{etag}"'} for n, etag in ordered]},
            )
        except ClientError as exc:
            if _code(exc) in _UPLOAD_ERRORS:
                raise UploadError(f"cannot complete {staging_key}: {_message(exc)}") from exc
            raise StorageError(f"cannot complete {staging_key}: {_message(exc)}") from exc

    async def abort_multipart(self, staging_key: str, upload_id: str) -> None:
        """AbortMultipartUpload; an unknown upload counts as already aborted."""
        await asyncio.to_thread(self._abort_multipart, staging_key, upload_id)

    def _abort_multipart(self, staging_key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=check_upload_key(staging_key), UploadId=upload_id
            )
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND | {"NoSuchUpload"}:
                raise StorageError(f"cannot abort {staging_key}: {_message(exc)}") from exc

    async def list_multipart_uploads(self, prefix: str = STAGING_PREFIX) -> list[MultipartUpload]:
        """Open multipart uploads under ``prefix``, sorted by key."""
        return await asyncio.to_thread(self._list_multipart_uploads, prefix)

    def _list_multipart_uploads(self, prefix: str) -> list[MultipartUpload]:
        paginator = self._client.get_paginator("list_multipart_uploads")
        uploads = [
            MultipartUpload(upload["Key"], upload["UploadId"], upload.get("Initiated"))
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for upload in page.get("Uploads", [])
        ]
        return sorted(uploads, key=lambda u: (u.staging_key, u.upload_id))

    # -- staged objects -------------------------------------------------------------------------

    async def staging_sha256_and_size(self, staging_key: str, sink: Sink | None = None) -> tuple[str, int]:
        """Stream the staged object through sha256 and ``sink`` (in a worker thread)."""
        return await asyncio.to_thread(self._staging_sha256_and_size, staging_key, sink)

    def _staging_sha256_and_size(self, staging_key: str, sink: Sink | None = None) -> tuple[str, int]:
        key = check_upload_key(staging_key)
        size = self._head_size(key)
        if size is not None and size > 2 * _HASH_RANGE:
            return self._parallel_sha256(key, size, sink)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise BlobNotFoundError(f"nothing staged under {staging_key}") from exc
            raise StorageError(f"GET {staging_key}: {_message(exc)}") from exc
        with closing(response["Body"]) as body:
            return hash_stream(body, sink=sink)

    def _parallel_sha256(self, key: str, size: int, sink: Sink | None = None) -> tuple[str, int]:
        """sha256 of a large object: ranged GETs run ahead in threads, hashed in order.

        At most ``_HASH_AHEAD`` ranges are in memory at once."""
        digest = hashlib.sha256()
        offsets = iter(range(0, size, _HASH_RANGE))
        missing = f"nothing staged under {key}"
        seen = 0
        with ThreadPoolExecutor(max_workers=_HASH_AHEAD) as pool:
            pending: deque[Future[bytes]] = deque(
                pool.submit(self._read_key, key, off, _HASH_RANGE, missing) for off in islice(offsets, _HASH_AHEAD)
            )
            while pending:
                data = pending.popleft().result()
                digest.update(data)
                if sink is not None:
                    sink(data)
                seen += len(data)
                nxt = next(offsets, None)
                if nxt is not None:
                    pending.append(pool.submit(self._read_key, key, nxt, _HASH_RANGE, missing))
        if seen != size:
            raise StorageError(f"{key}: read {seen} bytes of {size}")
        return digest.hexdigest(), size

    async def read_staging_range(self, staging_key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start`` of the staged object (to validate it before promotion)."""
        key = check_upload_key(staging_key)
        return await asyncio.to_thread(self._read_key, key, start, length, f"nothing staged under {staging_key}")

    async def promote_staging(self, staging_key: str, sha256: str) -> BlobInfo:
        """Server-side copy to the content key (skipped if the blob exists), then delete the staged object."""
        return await asyncio.to_thread(self._promote_staging, staging_key, sha256)

    def _promote_staging(self, staging_key: str, sha256: str) -> BlobInfo:
        sha256 = check_sha256(sha256)
        key = blob_key(sha256)
        size = self._head_size(check_staging_key(staging_key))
        if size is None:
            raise BlobNotFoundError(f"nothing staged under {staging_key}")
        if self._head_size(key) is None:
            try:
                self._client.copy(
                    {"Bucket": self.bucket, "Key": staging_key},
                    self.bucket,
                    key,
                    Config=self._transfer,
                )
            except ClientError as exc:
                raise StorageError(f"copy {staging_key} -> {key}: {_message(exc)}") from exc
        self._delete_key(staging_key)
        return BlobInfo(sha256, size, key)

    async def delete_staging(self, staging_key: str) -> None:
        """Delete the staged object if present."""
        await asyncio.to_thread(self._delete_key, check_staging_key(staging_key))


__all__ = ["S3BlobStore", "S3Client", "make_s3_client"]
