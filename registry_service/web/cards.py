"""A version's README as its model card: YAML front matter (license, datasets, tags, base model, eval
results) read with ``yaml.safe_load`` and the Markdown body rendered by markdown-it-py (CommonMark plus
tables, raw HTML off), then cleaned by nh3 (an allow-list of tags and attributes, ``javascript:`` and
other unsafe links dropped). The README is untrusted: every size and count here has a bound."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nh3
import yaml
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore

#: Only the first this-many bytes of a README are rendered (the upload limit is 1 MiB).
MAX_CARD_BYTES = 100_000
#: Markdown's inline syntax (links, emphasis) can cost time quadratic in a paragraph's length on hostile
#: input, about (markup characters × length). A paragraph (heading, table cell) longer than
#: MAX_INLINE_CHARS, or past the card's budget of MAX_INLINE_WORK such steps, is shown as plain text.
MAX_INLINE_CHARS = 4_000
MAX_INLINE_WORK = 600_000
_MARKUP = "[]!*_`<&\\"
#: Front matter larger than this is ignored (shown as text instead of being parsed).
MAX_FRONT_MATTER_BYTES = 32_000
#: At most this many chips per front-matter field, and metrics in the table.
MAX_CHIPS = 20
MAX_METRICS = 50
MAX_CHIP_CHARS = 80

_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(\r?\n|\Z)", re.S)
_TAGS = {"a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "img", "li",
         "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul"}
_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "ol": {"start"}, "code": {"class"}}


def _plain_long_inlines(state: StateCore) -> None:
    """Core rule before ``inline``: over-long inline runs, and all of them once the budget is spent, become
    plain (escaped) text."""
    budget = MAX_INLINE_WORK
    for token in state.tokens:
        if token.type != "inline":
            continue
        work = len(token.content) * sum(token.content.count(c) for c in _MARKUP)
        if len(token.content) > MAX_INLINE_CHARS or work > budget:
            token.type = "text"
        else:
            budget -= work


_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
_MD.core.ruler.before("inline", "plain_long_inlines", _plain_long_inlines)


@dataclass(frozen=True)
class Metric:
    """One evaluation result from ``model-index`` (or ``eval_results``)."""

    task: str
    dataset: str
    name: str
    value: str


@dataclass(frozen=True)
class ModelCard:
    """What the adapter page shows of a README."""

    html: str
    chips: dict[str, list[str]] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    truncated: bool = False
    front_matter_error: str | None = None


def _text(value: Any) -> str:
    return str(value)[:MAX_CHIP_CHARS]


def _list(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value] if value not in (None, "") else []
    return [_text(v) for v in items[:MAX_CHIPS] if isinstance(v, str | int | float)]


def _metrics(meta: Mapping[str, Any]) -> list[Metric]:
    """Rows of ``model-index[].results[].metrics[]`` (the Hub's layout), at most :data:`MAX_METRICS`."""
    out: list[Metric] = []
    index = meta.get("model-index")
    for model in index if isinstance(index, list) else []:
        results = model.get("results") if isinstance(model, Mapping) else None
        for result in results if isinstance(results, list) else []:
            if not isinstance(result, Mapping):
                continue
            task = result.get("task") if isinstance(result.get("task"), Mapping) else {}
            data = result.get("dataset") if isinstance(result.get("dataset"), Mapping) else {}
            metrics = result.get("metrics")
            for m in metrics if isinstance(metrics, list) else []:
                if isinstance(m, Mapping) and len(out) < MAX_METRICS:
                    out.append(Metric(_text(task.get("name") or task.get("type") or ""),
                                      _text(data.get("name") or data.get("type") or ""),
                                      _text(m.get("name") or m.get("type") or ""), _text(m.get("value", ""))))
    return out


def split_front_matter(text: str) -> tuple[dict[str, Any], str, str | None]:
    """(front matter, body, why the front matter was not used) of a README."""
    m = _FRONT.match(text)
    if not m:
        return {}, text, None
    raw = m.group(1) or ""
    if len(raw) > MAX_FRONT_MATTER_BYTES:
        return {}, text, f"front matter over {MAX_FRONT_MATTER_BYTES // 1000} KB is not read"
    try:
        meta = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        return {}, text, f"front matter is not valid YAML ({str(exc).splitlines()[0][:120]})"
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        return {}, text, "front matter is not a mapping"
    return meta, text[m.end():], None


def render_markdown(body: str) -> str:
    """Markdown to HTML that is safe to put in a page."""
    html = nh3.clean(_MD.render(body), tags=_TAGS, attributes=_ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                     link_rel="nofollow noopener noreferrer", strip_comments=True)
    # wide tables and code scroll inside their own box (focusable, so keyboards can scroll them too)
    return (html.replace("<table>", '<div class="scroll" tabindex="0" role="region" aria-label="table"><table>')
            .replace("</table>", "</table></div>").replace("<pre>", '<pre tabindex="0">'))


@functools.lru_cache(maxsize=64)
def model_card(readme: bytes) -> ModelCard:
    """The card of a README's bytes (the first :data:`MAX_CARD_BYTES` of them); versions never change,
    so the newest cards are kept."""
    truncated = len(readme) > MAX_CARD_BYTES
    text = readme[:MAX_CARD_BYTES].decode("utf-8", errors="replace")
    meta, body, error = split_front_matter(text)
    chips = {label: _list(meta.get(key)) for label, key in (
        ("License", "license"), ("Base model", "base_model"), ("Datasets", "datasets"),
        ("Languages", "language"), ("Library", "library_name"), ("Pipeline", "pipeline_tag"), ("Tags", "tags"))}
    return ModelCard(render_markdown(body), {k: v for k, v in chips.items() if v}, _metrics(meta), truncated, error)
