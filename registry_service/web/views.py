"""What the pages show, computed from rows: human sizes, a base model's signature in brief, the
copy-paste snippets of an adapter version, and the link that keeps a list's filters."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from litestar import Request
from markupsafe import Markup

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
    """A titled block of code to copy; ``note`` says what to change before running it."""

    title: str
    language: str
    code: str
    note: str = ""


#: The ``transformers`` class that loads a base model, by the end of its architecture's name.
_AUTO_CLASSES = (("ForCausalLM", "AutoModelForCausalLM"), ("ForSeq2SeqLM", "AutoModelForSeq2SeqLM"),
                 ("ForConditionalGeneration", "AutoModelForSeq2SeqLM"),
                 ("ForSequenceClassification", "AutoModelForSequenceClassification"),
                 ("ForTokenClassification", "AutoModelForTokenClassification"))


def auto_class(architecture: str | None) -> str:
    """``AutoModelForCausalLM`` for ``LlamaForCausalLM`` and the like; ``AutoModel`` otherwise."""
    return next((auto for suffix, auto in _AUTO_CLASSES if (architecture or "").endswith(suffix)), "AutoModel")


def snippets(root: str, adapter: str, version: int, *, private: bool, base_model: str,
             architecture: str | None = None, alias: str | None = None) -> list[Snippet]:
    """How to use ``adapter`` at ``version`` from the SDK, the CLI, and unmodified ``peft`` (the registry's URL
    passed explicitly; ``alias`` shown as the way to follow a moving version instead of a pinned one)."""
    follow = alias or "latest"
    auto = auto_class(architecture)
    load_base = (f"from transformers import {auto}\n\n"
                 f'base = {auto}.from_pretrained("{base_model}")  # the base model: a Hub id or a local folder\n')
    token_arg = ', token="<your token>"' if private else ""
    note = (f"{base_model} is the base model's name in this registry; load it from wherever you keep it "
            "(the Hub, or a local folder). The registry checked this adapter against its signature.")
    login = f"adapters --url {root} login  # paste a token of the namespace\n" if private else ""
    return [
        Snippet("SDK", "python",
                f"{load_base}\nfrom sdk.client import Client\n\n"
                f'with Client("{root}"{token_arg}) as registry:\n'
                f'    model = registry.load(base, "{adapter}@{version}")  # "{adapter}@{follow}" follows the alias\n',
                note),
        Snippet("Command line", "shell",
                f"{login}adapters --url {root} pull {adapter}@{version}  # or {adapter}@{follow}\n"),
        Snippet("peft (Hub-compatible API)", "python",
                f"{load_base}\nfrom huggingface_hub import snapshot_download\nfrom peft import PeftModel\n\n"
                f'folder = snapshot_download("{adapter}", revision="{version}", endpoint="{root}"{token_arg})'
                f'  # revision="{follow}" follows the alias\n'
                "model = PeftModel.from_pretrained(base, folder)\n", note),
    ]


def page_numbers(page: int, pages: int, *, around: int = 2) -> list[int | None]:
    """The page links of a pager: the first, the last, and ``around`` pages either side of ``page``
    (``None`` where pages are skipped)."""
    shown = sorted({1, pages, *range(max(1, page - around), min(pages, page + around) + 1)})
    out: list[int | None] = []
    for n in shown:
        if out and n - (out[-1] or 0) > 1:
            out.append(None)
        out.append(n)
    return out


def ago(when: dt.datetime | None, now: dt.datetime | None = None) -> Markup:
    """A ``<time>`` element: "5 minutes ago" with the exact UTC time as its ``datetime`` and title."""
    if when is None:
        return Markup("–")
    now = now or dt.datetime.now(dt.UTC)
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("day", 86400), ("hour", 3600),
                       ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            text = f"{n} {unit}{'' if n == 1 else 's'} ago"
            break
    else:
        text = "just now"
    exact = when.astimezone(dt.UTC)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        exact.isoformat(timespec="seconds"), exact.strftime("%Y-%m-%d %H:%M UTC"), text)


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """``1 min 5 s``; from ``start`` until now while ``end`` is None; "–" before it started."""
    if start is None:
        return "–"
    seconds = max(0, int(((end or dt.datetime.now(dt.UTC)) - start).total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return " ".join(f"{n} {u}" for n, u in ((hours, "h"), (minutes, "min"), (seconds, "s")) if n) or "0 s"


_TOKEN_LABEL = re.compile(r"^token#[0-9]+$")


def author(created_by: str | None, namespace: str) -> str:
    """Who published: the token's name (a person, a CI job); for an unnamed token, its namespace."""
    if not created_by or _TOKEN_LABEL.match(created_by):
        return f"a token of {namespace}"
    return created_by
