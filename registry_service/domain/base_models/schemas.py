"""The JSON bodies the base-models API answers with, as the OpenAPI schema states them."""

# No ``from __future__ import annotations``: TypedDict sees NotRequired only in evaluated annotations.
from typing import Any, NotRequired, TypedDict

from ..adapters.schemas import AdapterInfo


class WeightsFileInfo(TypedDict):
    """One weights file of a base model, with its download URL."""

    filename: str
    size: int
    sha256: str
    url: str


class BaseModelInfo(TypedDict):
    """A base model; its weights files when listed with them, its full signature when asked for by name,
    and the files just added after an upload."""

    name: str
    revision: str | None
    license: str | None
    architecture: str | None
    model_type: str | None
    fingerprint: str
    modules: int
    created_at: str | None
    has_weights: NotRequired[bool]
    files: NotRequired[list[WeightsFileInfo]]
    signature: NotRequired[dict[str, Any]]
    added: NotRequired[list[str]]
    license_restrictive: NotRequired[bool]


class BaseModelPage(TypedDict):
    """A page of base models."""

    items: list[BaseModelInfo]
    page: int


class CompatibleAdapters(TypedDict):
    """Adapters that fit a base model (same signature fingerprint); ``total`` as in a search (on the last
    page, or with ``count=true`` up to 1,000: ``total_exact``; null otherwise)."""

    items: list[AdapterInfo]
    total: int | None
    total_exact: bool
    page: int
    fingerprint: str
    has_more: bool
    next_cursor: str | None


class WeightsFiles(TypedDict):
    """A base model's weights files."""

    items: list[WeightsFileInfo]


__all__ = ["BaseModelInfo", "BaseModelPage", "CompatibleAdapters", "WeightsFileInfo", "WeightsFiles"]
