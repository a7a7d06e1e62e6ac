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
    """A page of adapters, how many match (on the last page, or asked with ``count=true``: counted up to
    1,000, ``total_exact`` says whether that is all; null otherwise), and the cursor to the next page while
    ``has_more``."""

    items: list[AdapterInfo]
    total: int | None
    total_exact: bool
    page: int
    has_more: bool
    next_cursor: str | None


class BaseModelRef(TypedDict):
    """The base model a version was validated against: revision then and now, and its license."""

    name: str
    revision: str | None
    validated_revision: str | None
    license: str | None
    license_restrictive: bool


class VersionInfo(TypedDict):
    """A version: its config, summary, lineage parents, provenance (description, metrics, params, dataset)
    and files."""

    adapter: str
    version: int
    commit: str
    config: dict[str, Any]
    summary: dict[str, Any] | None
    parents: list[dict[str, Any]] | None
    description: str | None
    metrics: dict[str, float]
    params: dict[str, Any]
    dataset: dict[str, str] | None
    created_by: str | None
    created_at: str | None
    #: When, by whom and why it was yanked (``purged``: its files were removed); null for a live version.
    yanked: dict[str, Any] | None
    files: list[FileInfo]
    #: the serving-compatibility report (sdk.serving_compat): per engine a verdict, its reason, what it needs
    serving: dict[str, Any]
    #: a merge job's probe check of the published bytes (sdk.merging.verify); null for pushed versions
    merge_check: dict[str, Any] | None
    #: the adapter's own license (push field or model card)
    license: str | None
    #: the base model: its current revision, the revision this version was validated against, its license
    base_model: BaseModelRef


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


class AliasMove(TypedDict):
    """One move of an alias: where it pointed from ``at`` on (``version`` null: removed), and who moved it."""

    id: int
    version: int | None
    commit: str | None
    previous_version: int | None
    moved_by: str | None
    at: str | None


class AliasHistory(TypedDict):
    """An alias's moves, newest first, and the version it points at now (null: removed)."""

    alias: str
    current: int | None
    items: list[AliasMove]


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


__all__ = [
    "AdapterInfo",
    "AdapterPage",
    "AliasDeleted",
    "AliasHistory",
    "AliasMove",
    "AliasMoved",
    "BaseModelRef",
    "FileInfo",
    "PartStored",
    "PartTarget",
    "PublishedVersion",
    "UploadEnded",
    "UploadSessionInfo",
    "VersionInfo",
    "VersionList",
]
