"""Request bodies of the merge-jobs API."""

from __future__ import annotations

from dataclasses import dataclass, field


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
