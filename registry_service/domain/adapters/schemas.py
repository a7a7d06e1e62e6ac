"""The JSON bodies the adapters API answers with, as the OpenAPI schema states them (the dicts the
``describe_*`` functions build have exactly these keys)."""

# No ``from __future__ import annotations``: TypedDict sees NotRequired only in evaluated annotations.
from typing import Any, NotRequired, TypedDict


class FileInfo(TypedDict):
    """One file of a version, with its download URL."""

    filename: str
    size: int
    sha256: str
    url: str


class AdapterInfo(TypedDict):
    """An adapter; ``aliases`` (alias -> version) when it is asked for by name."""

    name: str
    base_model: str
    base_model_fingerprint: str
    method: str
    description: str | None
    tags: list[str]
    visibility: str
    versions: int
    created_at: str | None
    updated_at: str | None
    aliases: NotRequired[dict[str, int]]


class AdapterPage(TypedDict):
    """A page of adapters, how many match (counted up to 1,000: ``total_exact``), and the cursor to
    the next page while ``has_more``."""

    items: list[AdapterInfo]
    total: int
    total_exact: bool
    page: int
    has_more: bool
    next_cursor: str | None


class VersionInfo(TypedDict):
    """A version: its config, summary, lineage parents and files."""

    adapter: str
    version: int
    commit: str
    config: dict[str, Any]
    summary: dict[str, Any] | None
    parents: list[dict[str, Any]] | None
    created_by: str | None
    created_at: str | None
    files: list[FileInfo]


class PublishedVersion(VersionInfo):
    """A version just published, with notes on what was ignored (and its page, for direct pushes)."""

    notes: list[str]
    url: NotRequired[str]


class VersionList(TypedDict):
    """Versions, newest first, and the aliases; ``next_before`` continues the listing when ``has_more``."""

    items: list[VersionInfo]
    aliases: dict[str, int]
    has_more: bool
    next_before: int | None


class AliasMoved(TypedDict):
    """Where an alias points now."""

    alias: str
    version: int
    commit: str


class AliasDeleted(TypedDict):
    """The alias removed."""

    deleted: str


class PartTarget(TypedDict):
    """Where one part of an upload goes."""

    part_number: int
    url: str
    method: str
    size: int


class UploadSessionInfo(TypedDict):
    """An open upload session: its part size, a URL per part, and where to finalize."""

    id: str
    part_size: int
    parts: list[PartTarget]
    finalize_url: str
    direct: bool


class PartStored(TypedDict):
    """A part received through the API, with the ETag finalize needs."""

    part_number: int
    etag: str


class UploadEnded(TypedDict):
    """An upload given up."""

    id: str
    state: str


__all__ = ["AdapterInfo", "AdapterPage", "AliasDeleted", "AliasMoved", "FileInfo", "PartStored", "PartTarget",
           "PublishedVersion", "UploadEnded", "UploadSessionInfo", "VersionInfo", "VersionList"]
