"""Blob storage: the :class:`BlobStore` protocol and its two backends.

- :class:`LocalBlobStore` — a directory; the embedded default.
- :class:`S3BlobStore` — any S3-compatible server through boto3 (AWS S3, MinIO, SeaweedFS).

Blobs are content-addressed (``blobs/sha256/ab/cdef…``, see :func:`blob_key`): a file is stored
once however many versions carry it. See :mod:`registry_service.storage.base` for the contract.
"""

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
    "sha256_from_key",
]
