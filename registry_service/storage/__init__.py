"""Blob storage: the :class:`BlobStore` protocol and its two backends.

- :class:`LocalBlobStore` — a directory; the embedded default.
- :class:`S3BlobStore` — any S3-compatible server through boto3 (AWS S3, MinIO, SeaweedFS).

Blobs are content-addressed (``blobs/sha256/ab/cdef…``, see :func:`blob_key`): a file is stored
once however many versions carry it. See :mod:`registry_service.storage.base` for the contract.
:func:`make_store` picks the backend the settings ask for (the API and the workers both use it).
"""

from __future__ import annotations

from ..settings import Settings
from .base import (
    BLOB_PREFIX,
    MIN_PART_SIZE,
    STAGING_PREFIX,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    IntegrityError,
    InvalidRangeError,
    MultipartUpload,
    StorageError,
    UploadError,
    blob_key,
    blob_ref_key,
    content_disposition,
    is_direct_key,
    sha256_from_key,
)
from .local import LocalBlobStore
from .s3 import S3BlobStore


def make_store(settings: Settings) -> BlobStore:
    """S3 when a bucket is configured, else a directory under the data dir."""
    if settings.uses_s3:
        assert settings.s3_bucket
        return S3BlobStore(settings.s3_bucket, endpoint_url=settings.s3_endpoint, region=settings.s3_region,
                           public_endpoint_url=settings.s3_public_endpoint,
                           max_pool_connections=settings.s3_max_connections)
    return LocalBlobStore(settings.data_dir / "blobs")


__all__ = [
    "BLOB_PREFIX",
    "MIN_PART_SIZE",
    "STAGING_PREFIX",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobStore",
    "IntegrityError",
    "InvalidRangeError",
    "LocalBlobStore",
    "MultipartUpload",
    "S3BlobStore",
    "StorageError",
    "UploadError",
    "blob_key",
    "blob_ref_key",
    "content_disposition",
    "is_direct_key",
    "make_store",
    "sha256_from_key",
]
