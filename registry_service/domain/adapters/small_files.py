"""The bytes of small version files (configs, READMEs) kept in memory once read, so serving one again
costs no storage round trip (no worker-thread file reads, no S3 GET).

A version's files never change: a file is named by its storage key and sha256, and a cached entry is
only ever the bytes stored under that key with that length. The cache holds bytes, not permissions:
every request still finds the file through a query that checks who may read it (:mod:`.reads`), and
only then asks here. One cache per blob store, bounded by :data:`SMALL_FILES_BUDGET` bytes, the least
recently used dropped first.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

from ...db.models import File
from ...storage import BlobStore
from .reads import FileRow

#: Files up to this size are kept once read.
SMALL_FILE_BYTES = 64 * 1024
#: Bytes kept per blob store at most.
SMALL_FILES_BUDGET = 16 * 2**20


class SmallFiles:
    """(storage key, sha256) -> bytes, at most ``budget`` bytes in all."""

    def __init__(self, budget: int = SMALL_FILES_BUDGET) -> None:
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, f: File | FileRow) -> bytes | None:
        """The cached bytes of ``f``, if any."""
        key = (f.storage_key, f.sha256)
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, f: File | FileRow, data: bytes) -> None:
        """Keep ``data`` as the bytes of ``f`` (only when it has ``f``'s size), dropping the oldest over budget."""
        key = (f.storage_key, f.sha256)
        if len(data) != f.size or len(data) > self.budget or key in self._entries:
            return
        self._entries[key] = data
        self.used += len(data)
        while self.used > self.budget:
            self.used -= len(self._entries.popitem(last=False)[1])


_CACHES: weakref.WeakKeyDictionary[BlobStore, SmallFiles] = weakref.WeakKeyDictionary()


def small_files(store: BlobStore) -> SmallFiles:
    """The cache in front of ``store``."""
    cache = _CACHES.get(store)
    if cache is None:
        cache = _CACHES[store] = SmallFiles()
    return cache


def is_small(f: File | FileRow) -> bool:
    """Whether ``f``'s bytes are kept in memory once read (empty files are not: nothing to save)."""
    return 0 < f.size <= SMALL_FILE_BYTES


async def small_file_bytes(store: BlobStore, f: File | FileRow) -> bytes:
    """All the bytes of the small file ``f``: from memory, or read from ``store`` in one call and kept.
    Raises the store's :class:`~registry_service.storage.BlobNotFoundError` when they are missing."""
    cache = small_files(store)
    data = cache.get(f)
    if data is None:
        data = await store.read_range(f.storage_key, 0, f.size)
        cache.put(f, data)
    return data


__all__ = ["SMALL_FILES_BUDGET", "SMALL_FILE_BYTES", "SmallFiles", "is_small", "small_file_bytes", "small_files"]
