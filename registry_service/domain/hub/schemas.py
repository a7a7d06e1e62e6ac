"""The JSON bodies of the Hub-compatible routes, as ``huggingface_hub`` reads them."""

# No ``from __future__ import annotations``: TypedDict sees NotRequired only in evaluated annotations.
from typing import Any, NotRequired, TypedDict


class LfsInfo(TypedDict):
    """A file's Git LFS pointer facts in ``model_info``."""

    sha256: str
    size: int
    pointerSize: int


class Sibling(TypedDict):
    """A file of a revision in ``model_info`` (sizes and ids with ``?blobs=true``)."""

    rfilename: str
    size: NotRequired[int]
    blobId: NotRequired[str]
    lfs: NotRequired[LfsInfo]


class CardData(TypedDict):
    """The model card metadata the client reads."""

    base_model: str
    library_name: str


class ModelInfo(TypedDict):
    _id: str
    id: str
    modelId: str
    author: str
    sha: str
    private: bool
    gated: bool
    disabled: bool
    lastModified: str | None
    createdAt: str | None
    library_name: str
    pipeline_tag: None
    downloads: int
    likes: int
    tags: list[str]
    cardData: CardData
    siblings: list[Sibling]
    version: int
ModelInfo.__doc__ = "``model_info``/``repo_info`` of a repo (an adapter) at a revision (a version)."


class TreeLfs(TypedDict):
    """A tree entry's LFS facts."""

    oid: str
    size: int
    pointerSize: int


class TreeEntry(TypedDict):
    """One file of ``/tree``."""

    type: str
    path: str
    size: int
    oid: str
    lfs: TreeLfs


class CommitInfo(TypedDict):
    """A commit published as a new version."""

    commitUrl: str
    commitOid: str
    commitMessage: Any
    pullRequestUrl: None
    version: int


class PreuploadFile(TypedDict):
    """How one file is to be sent (always inline)."""

    path: Any
    uploadMode: str
    shouldIgnore: bool


class PreuploadAnswer(TypedDict):
    """``preupload``: every file inline."""

    files: list[PreuploadFile]


class YamlCheck(TypedDict):
    """``validate-yaml``: nothing to report."""

    errors: list[str]
    warnings: list[str]


__all__ = ["CommitInfo", "ModelInfo", "PreuploadAnswer", "Sibling", "TreeEntry", "YamlCheck"]
