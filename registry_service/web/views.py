"""What the pages show, computed from rows: human sizes, a base model's signature in brief, the
copy-paste snippets of an adapter version, and the link that keeps a list's filters."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from litestar import Request

from ..settings import Settings

_LAYER_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


def human_size(n: int | None) -> str:
    """``1536`` -> ``1.5 KiB``."""
    if n is None:
        return "–"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_count(n: int | None) -> str:
    """``1234567`` -> ``1.23 M``."""
    if n is None:
        return "–"
    if n < 10_000:
        return f"{n:,}"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)


def public_root(request: Request, settings: Settings) -> str:
    """The URL clients use to reach the registry (configured, or as this request reached it)."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


def list_url(path: str, filters: Mapping[str, Any], **changes: Any) -> str:
    """``path`` with the non-empty ``filters`` as query, ``changes`` applied (``None`` drops a key)."""
    merged = {**filters, **changes}
    query = {k: v for k, v in merged.items() if v not in (None, "") and not (k == "page" and v == 1)}
    return f"{path}?{urlencode(query)}" if query else path


@dataclass(frozen=True)
class ModuleGroup:
    """Modules of a signature that differ only by their layer index."""

    pattern: str
    kind: str
    in_features: int | None
    out_features: int | None
    params: str
    count: int


@dataclass(frozen=True)
class SignatureSummary:
    """A base model's signature in brief: counts, and modules grouped across layers."""

    modules: int
    parameters: int
    kinds: dict[str, int]
    groups: list[ModuleGroup]
    output_heads: list[str]


def summarize_signature(signature: Mapping[str, Any]) -> SignatureSummary:
    """Group the signature's modules by path with layer numbers folded (``layers.*.q_proj``)."""
    modules: Sequence[Mapping[str, Any]] = signature.get("modules") or []
    kinds: dict[str, int] = {}
    grouped: dict[tuple[Any, ...], int] = {}
    parameters = 0
    for m in modules:
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
        params = m.get("params") or {}
        parameters += sum(math.prod(shape) for shape in params.values())
        shapes = ", ".join(f"{k} {'×'.join(str(d) for d in v)}" for k, v in sorted(params.items()))
        key = (_LAYER_INDEX.sub("*", m["path"]), m["kind"], m.get("in_features"), m.get("out_features"), shapes)
        grouped[key] = grouped.get(key, 0) + 1
    groups = [ModuleGroup(*key, count=n) for key, n in grouped.items()]
    return SignatureSummary(len(modules), parameters, dict(sorted(kinds.items())), groups,
                            list(signature.get("output_heads") or []))


@dataclass(frozen=True)
class Snippet:
    """A titled block of code to copy."""

    title: str
    language: str
    code: str


def snippets(root: str, adapter: str, version: int, *, private: bool) -> list[Snippet]:
    """How to use ``adapter`` at ``version`` from the SDK, the CLI, and unmodified ``peft``."""
    token_env = '\nos.environ["ADAPTER_REGISTRY_TOKEN"] = "<your token>"' if private else ""
    hf_token = ', token="<your token>"' if private else ""
    return [
        Snippet("SDK", "python",
                f'import os\nos.environ["ADAPTER_REGISTRY_URL"] = "{root}"{token_env}\n\n'
                f"import sdk\n"
                f'folder = sdk.pull("{adapter}@{version}")           # files on disk, verified by sha256\n'
                f'model = sdk.load(base_model, "{adapter}@{version}")  # or inject into a model'),
        Snippet("Command line", "shell",
                f"adapters login --url {root}\nadapters pull {adapter}@{version}"),
        Snippet("peft (Hub-compatible API)", "python",
                f'import os\nos.environ["HF_ENDPOINT"] = "{root}"  # before importing huggingface_hub or peft\n\n'
                f"from peft import PeftModel\n"
                f'model = PeftModel.from_pretrained(base_model, "{adapter}", revision="{version}"{hf_token})'),
    ]
