"""Model cards from untrusted READMEs: safe HTML, front matter read with bounds, and time bounded on
hostile Markdown; and the readable method names the pages show."""

from __future__ import annotations

import time

import pytest

from registry_service.web.cards import MAX_CARD_BYTES, MAX_CHIPS, MAX_METRICS, model_card, render_markdown
from registry_service.web.views import auto_class, page_numbers
from sdk.methods import method_name


def test_markdown_keeps_tables_and_code_and_drops_html_and_script_links() -> None:
    html = render_markdown("| a | b |\n|---|---|\n| 1 | 2 |\n\n```py\nx = 1\n```\n\n<script>alert(1)</script>\n\n"
                           "[x](javascript:alert(1)) [y](https://example.org) <img src=x onerror=alert(1)>\n\n"
                           "![p](data:image/svg+xml;base64,PHN2Zz4=)")
    assert "<table>" in html and "<td>1</td>" in html and '<code class="language-py">x = 1' in html
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "javascript:" not in html.split("[x]")[0] and 'href="javascript' not in html
    assert "onerror" not in html.replace("onerror=alert(1)&gt;", "") and "<img src=x" not in html
    assert 'href="https://example.org" rel="nofollow noopener noreferrer"' in html
    assert "src=\"data:" not in html  # only http(s) and mailto URLs survive
    assert '<div class="scroll" tabindex="0" role="region" aria-label="table"><table>' in html


def test_front_matter_chips_and_metrics() -> None:
    metrics = b", ".join(b"{name: f1, value: %d}" % i for i in range(80))
    card = model_card(b"---\nlicense: mit\ndatasets: [a, b]\ntags: " + str([f"t{i}" for i in range(50)]).encode()
                      + b"\nmodel-index:\n- results:\n  - task: {type: qa}\n    dataset: {name: squad}\n"
                      b"    metrics: [" + metrics + b"]\n---\n# Hi\n")
    assert card.chips["License"] == ["mit"] and card.chips["Datasets"] == ["a", "b"]
    assert len(card.chips["Tags"]) == MAX_CHIPS
    assert len(card.metrics) == MAX_METRICS and card.metrics[0].task == "qa" and card.metrics[0].dataset == "squad"
    assert card.html.strip() == "<h1>Hi</h1>" and card.front_matter_error is None


@pytest.mark.parametrize("front", [b"---\n: [unclosed\n---\nbody", b"---\n- a list\n---\nbody",
                                   b"---\n!!python/object/apply:os.system ['true']\n---\nbody"])
def test_bad_front_matter_is_reported_not_fatal(front: bytes) -> None:
    card = model_card(front)
    assert card.front_matter_error and not card.chips and "body" in card.html


@pytest.mark.parametrize("evil", [b"[" * 1_000_000, b"*a" * 500_000, b"![" * 500_000,
                                  (b"![" * 900 + b"\n\n") * 300, (b"[a](b) _c_ " * 40 + b"\n\n") * 400])
def test_hostile_markdown_is_bounded(evil: bytes) -> None:
    started = time.monotonic()
    card = model_card(evil)
    assert time.monotonic() - started < 3, "rendering a hostile README took too long"
    assert card.truncated == (len(evil) > MAX_CARD_BYTES)
    assert len(card.html) < 12 * MAX_CARD_BYTES


def test_method_names_and_helpers() -> None:
    assert [method_name(m) for m in ("LORA", "IA3", "PROMPT_TUNING", "ADALORA")] == [
        "LoRA", "IA³", "prompt tuning", "AdaLoRA"]
    assert method_name("LORA", {"use_dora": True}) == "DoRA" and method_name("SOMETHING") == "SOMETHING"
    assert auto_class("LlamaForCausalLM") == "AutoModelForCausalLM" and auto_class(None) == "AutoModel"
    assert page_numbers(1, 1) == [1]
    assert page_numbers(7, 20) == [1, None, 5, 6, 7, 8, 9, None, 20]
