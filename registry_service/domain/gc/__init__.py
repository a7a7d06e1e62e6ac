"""Garbage collection of storage: blobs no row references, and what ended or abandoned upload
sessions left behind (:mod:`.collect`). Run periodically by the workers and by
``adapter-registry gc [--dry-run]``."""

from .collect import GcReport, collect

__all__ = ["GcReport", "collect"]
