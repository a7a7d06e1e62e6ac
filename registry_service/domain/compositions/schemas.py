"""Request and response shapes of the compositions API."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

import msgspec

from sdk.tuners.poly.config import MAX_SPLITS
from sdk.tuners.poly.skills import MAX_ROUTER_BYTES, MAX_ROUTER_TASKS

from ..adapters.metadata import MAX_DESCRIPTION_CHARS

#: At most this many members in one composition version.
MAX_MEMBERS = 64
#: The largest Arrow ``top_k``.
MAX_TOP_K = MAX_MEMBERS


class MemberIn(msgspec.Struct, forbid_unknown_fields=True):
    """One member: an adapter version ``ns/name[@version|alias|commit]`` (pinned by commit when saved)."""

    adapter: Annotated[str, msgspec.Meta(max_length=300)]
    weight: Annotated[float, msgspec.Meta(ge=-100.0, le=100.0)] = 1.0
    #: ``general``: a general-knowledge adapter for Arrow's GKS (only with ``use_gks``).
    role: Literal["task", "general"] = "task"


class StackedRouting(msgspec.Struct, tag_field="kind", tag="stacked", forbid_unknown_fields=True):
    """Every member active at once, each ΔW scaled by its weight."""


class ArrowRouting(msgspec.Struct, tag_field="kind", tag="arrow", forbid_unknown_fields=True):
    """Arrow routing over the task members (PEFT's ``ArrowConfig``)."""

    top_k: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOP_K)] = 3
    router_temperature: Annotated[float, msgspec.Meta(gt=0.0, le=1e6)] = 1.0
    use_gks: bool = False
    rng_seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None


class RouterRouting(msgspec.Struct, tag_field="kind", tag="router", forbid_unknown_fields=True):
    """A learned Poly router over the members as its skills (:mod:`sdk.tuners.poly.skills`): ``router_file`` is
    the router's safetensors file (``module_logits`` per adapted layer), base64 in JSON; it is stored, not kept
    in the routing."""

    n_tasks: Annotated[int, msgspec.Meta(ge=1, le=MAX_ROUTER_TASKS)]
    router_file: Annotated[bytes, msgspec.Meta(max_length=MAX_ROUTER_BYTES)]
    n_splits: Annotated[int, msgspec.Meta(ge=1, le=MAX_SPLITS)] = 1


class CompositionIn(msgspec.Struct, forbid_unknown_fields=True):
    """A new composition version (the composition is created with its first version)."""

    members: Annotated[list[MemberIn], msgspec.Meta(min_length=1, max_length=MAX_MEMBERS)]
    routing: StackedRouting | ArrowRouting | RouterRouting
    alias: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION_CHARS)] | None = None
    private: bool = False


class CompositionInfo(TypedDict, total=False):
    """A composition."""

    name: str
    base_model: str
    description: str
    visibility: str
    versions: int
    routing: str
    aliases: dict[str, int]
    created_at: str | None
    updated_at: str | None


class CompositionVersionInfo(TypedDict, total=False):
    """One composition version: its pinned members, routing and Arrow prototypes file."""

    composition: str
    version: int
    commit: str
    base_model: str
    members: list[dict[str, Any]]
    routing: dict[str, Any]
    files: list[dict[str, Any]]
    created_by: str | None
    created_at: str | None


class CompositionPage(TypedDict):
    """A page of search results."""

    items: list[CompositionInfo]
    total: int
    page: int
