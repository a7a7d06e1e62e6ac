"""Request and response bodies of the merge-jobs API."""

# No ``from __future__ import annotations``: TypedDict sees NotRequired only in evaluated annotations.
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict


@dataclass
class MergeInput:
    """One adapter version to combine: ``ref`` is ``ns/name`` (latest), ``ns/name@3``, ``@alias`` or ``@<commit>``."""

    ref: str
    weight: float = 1.0


@dataclass
class MergeOutput:
    """Where the result goes: a new version of adapter ``adapter`` (``ns/name``), or a merged full model
    registered as base model ``model`` (``ns/name``, with the merged weights as its files)."""

    adapter: str | None = None
    model: str | None = None
    #: Adapter outputs: an alias to point at the new version (``latest`` moves by itself).
    alias: str | None = None
    description: str | None = None
    #: Adapter outputs: create the adapter private (required when an input is private).
    private: bool = False


@dataclass
class MergeJobRequest:
    """``POST /api/v1/merge-jobs``: inputs, how to combine them, and the output."""

    inputs: list[MergeInput]
    output: MergeOutput
    combination_type: str = "linear"
    density: float | None = None
    majority_sign_method: str = "total"
    svd_rank: int | None = None
    svd_clamp: float | None = None
    #: Seed of the random masks of the ``dare_*`` types (chosen and recorded when omitted).
    seed: int | None = None
    #: The base model whose weights a model output starts from, or under which a new adapter is
    #: created (``ns/name``; default: the first input's). Must have the inputs' fingerprint.
    base_model: str | None = None
    tags: list[str] = field(default_factory=list)


# --- what the API answers ------------------------------------------------------------------------


class AdapterResult(TypedDict):
    """A finished adapter merge: the version it published."""

    kind: Literal["adapter"]
    adapter: str
    version: int
    commit: str
    ref: str
    url: str


class ModelResult(TypedDict):
    """A finished full-model merge: the base model it registered."""

    kind: Literal["model"]
    model: str
    url: str
    files: str


class MergeJobInfo(TypedDict):
    """A merge job: state, progress (0..1), error, and its result once there is one."""

    id: str
    state: str
    progress: float
    error: str | None
    cancel_requested: bool
    inputs: list[dict[str, Any]]
    combination_type: str
    parameters: dict[str, Any]
    output: dict[str, Any]
    base_model: str | None
    result: AdapterResult | ModelResult | None
    #: the probe check of the result before it was published (sdk.merging.verify), once it ran
    verification: dict[str, Any] | None
    attempts: int
    worker: str | None
    created_by: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None
    url: str


class MergeJobPage(TypedDict):
    """A page of jobs, newest first."""

    items: list[MergeJobInfo]
    total: int
    page: int


class LineageNode(TypedDict):
    """A version in a lineage; readable ones say which version and where its API is."""

    id: str
    label: str
    current: bool
    note: str | None
    adapter: NotRequired[str]
    version: NotRequired[int]
    commit: NotRequired[str]
    url: NotRequired[str]
    page: NotRequired[str]


class LineageEdge(TypedDict):
    """Parent -> child, with the input's weight and the merge's parameters when recorded."""

    parent: str
    child: str
    label: str
    weight: NotRequired[float]
    combination_type: NotRequired[str]
    density: NotRequired[float | None]
    job: NotRequired[str]


class LineageGraph(TypedDict):
    """A version and its ancestors."""

    root: str
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    parents: list[dict[str, Any]]
