"""The web UI in a real browser: Debian's Chromium driven by Playwright against the registry running
as a real process (embedded PostgreSQL, local blobs), with adapters pushed by the SDK client.

Browsing, search and filters run with JavaScript turned off (the UI must work without it).
Set ``ADAPTER_HUB_SCREENSHOTS=docs`` to refresh the README's screenshots in ``docs/``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from test_client import saved_adapter

from registry_service.domain.merge_jobs.lineage import Edge, Lineage, Node
from registry_service.web.lineage import NODE_W, layout
from sdk.client import Client

if TYPE_CHECKING:
    from e2e_server import Server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BULK = 21  # one more than a page of the adapter list
EVIL = "Answers politely. <script>window.__pwned = 1</script><b>bold?</b>"


@dataclass
class Catalog:
    """What the module pushed: names, tokens, and the base models."""

    srv: Server
    ns: str
    llama: str
    gpt2: str
    read_token: str
    other_token: str

    @property
    def chat(self) -> str:
        return f"{self.ns}/chat-helper"

    @property
    def summarizer(self) -> str:
        return f"{self.ns}/summarizer"

    @property
    def secret(self) -> str:
        return f"{self.ns}/secret-sauce"


def own_base(arch: str) -> dict:
    """test_client's tiny model with a vocabulary no other test uses: the same adapters fit it, but its
    fingerprint is this module's own, so counts of compatible adapters and fitting bases are exact even
    when other tests share the registry."""
    from transformers import GPT2Config, LlamaConfig

    if arch == "llama":
        cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        return cfg.to_dict() | {"architectures": ["LlamaForCausalLM"]}
    cfg = GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    return cfg.to_dict() | {"architectures": ["GPT2LMHeadModel"]}


@pytest.fixture(scope="module")
def catalog(local_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """Two base models and, in a fresh namespace: a two-version chat adapter (alias ``prod`` on 1), a GPT-2
    summarizer, a private adapter, and enough bulk adapters to need a second page."""
    tmp = tmp_path_factory.mktemp("web-ui")
    ns = f"web{uuid.uuid4().hex[:6]}"
    llama, gpt2 = f"{ns}-base/tiny-llama", f"{ns}-base/tiny-gpt2"
    with Client(local_server.url, local_server.admin, cache_dir=tmp / "admin", quiet=True) as admin:
        admin.register_base_model(own_base("llama"), llama)
        admin.register_base_model(own_base("gpt2"), gpt2)
    first, second = saved_adapter(tmp / "l1", "llama", 1), saved_adapter(tmp / "l2", "llama", 2)
    g = saved_adapter(tmp / "g1", "gpt2", 1)
    with Client(local_server.url, local_server.token(ns, "write"), cache_dir=tmp / "c", quiet=True) as c:
        c.push(first, f"{ns}/chat-helper", llama, alias="prod", tags=["chat", "en"], description=EVIL)
        c.push(second, f"{ns}/chat-helper", llama)
        c.push(g, f"{ns}/summarizer", gpt2, tags=["summarize"], description="Short summaries of long text.")
        c.push(first, f"{ns}/secret-sauce", llama, private=True, description="Not for everyone.")
        for i in range(BULK):
            c.push(first, f"{ns}/bulk-{i:02d}", llama, tags=["bulk"])
    return Catalog(local_server, ns, llama, gpt2, local_server.token(ns, "read"),
                   local_server.token(f"{ns}-other", "read"))


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium (never a downloaded one)."""
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


def _context(browser: Browser, catalog: Catalog, *, javascript: bool) -> BrowserContext:
    ctx = browser.new_context(base_url=catalog.srv.url, java_script_enabled=javascript,
                              viewport={"width": 1200, "height": 800})
    ctx.set_default_timeout(15_000)
    return ctx


@pytest.fixture
def page(browser: Browser, catalog: Catalog) -> Iterator[Page]:
    """A fresh page with JavaScript on, its own cookies."""
    ctx = _context(browser, catalog, javascript=True)
    yield ctx.new_page()
    ctx.close()


@pytest.fixture
def plain_page(browser: Browser, catalog: Catalog) -> Iterator[Page]:
    """A fresh page with JavaScript off."""
    ctx = _context(browser, catalog, javascript=False)
    yield ctx.new_page()
    ctx.close()


def shoot(page: Page, name: str, tmp_path: Path) -> None:
    """A screenshot: into docs/ when refreshing the README's pictures, else a throwaway one."""
    folder = Path(os.environ["ADAPTER_HUB_SCREENSHOTS"]) if os.environ.get("ADAPTER_HUB_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"web-{name}.png"
    page.screenshot(path=str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def cards(page: Page) -> list[str]:
    return page.locator("ul.cards a.adapter-link").all_inner_texts()


# --- browsing without JavaScript ---------------------------------------------------------------------


def test_home_search_and_filters(plain_page: Page, catalog: Catalog, tmp_path: Path) -> None:
    page = plain_page
    page.goto("/")
    expect(page.locator("h1")).to_contain_text("adapters")
    expect(page.locator("aside")).to_contain_text(catalog.llama)
    shoot(page, "home", tmp_path)

    page.locator(".big-search input[name=q]").fill("chat-helper")
    page.locator(".big-search button").click()
    expect(page).to_have_url(re.compile(r"/adapters\?q=chat-helper"))
    assert catalog.chat in cards(page)
    assert catalog.summarizer not in cards(page)

    page.goto(f"/adapters?q={catalog.ns}")
    expect(page.locator(".count")).to_have_text(f"{BULK + 2} adapters")  # the private one is not counted
    assert catalog.secret not in cards(page)
    page.locator("select[name=base_model]").select_option(catalog.gpt2)
    page.locator(".filters button").click()
    assert cards(page) == [catalog.summarizer]
    expect(page.locator("select[name=base_model]")).to_have_value(catalog.gpt2)  # the filter stays shown

    page.goto(f"/adapters?q=chat-helper&method=LORA&base_model={catalog.llama}")
    assert catalog.chat in cards(page)
    page.goto(f"/adapters?q=chat-helper&base_model={catalog.gpt2}")
    expect(page.locator("ul.cards")).to_have_text("No adapters match.")
    page.goto(f"/adapters/{catalog.summarizer}")
    page.locator(".title-row a.tag", has_text="summarize").click()
    expect(page).to_have_url(re.compile(r"/adapters\?tag=summarize$"))
    assert catalog.summarizer in cards(page) and catalog.chat not in cards(page)


def test_paging_keeps_filters(plain_page: Page, catalog: Catalog, tmp_path: Path) -> None:
    page = plain_page
    page.goto(f"/adapters?q={catalog.ns}&tag=bulk")
    expect(page.locator(".pager")).to_contain_text("page 1 of 2")
    first = cards(page)
    assert len(first) == 20
    shoot(page, "adapters", tmp_path)
    page.locator("a[rel=next]").click()
    expect(page).to_have_url(re.compile(r"page=2"))
    expect(page.locator(".pager")).to_contain_text("page 2 of 2")
    second = cards(page)
    assert len(second) == BULK - 20 and not set(first) & set(second)
    assert all(name.startswith(f"{catalog.ns}/bulk-") for name in first + second)
    page.locator("a[rel=prev]").click()
    assert cards(page) == first


def test_adapter_page_and_versions(page: Page, catalog: Catalog, tmp_path: Path) -> None:
    api = httpx.get(f"{catalog.srv.url}/api/v1/adapters/{catalog.chat}/versions").json()["items"]
    page.goto(f"/adapters/{catalog.chat}")
    expect(page.locator("#version h2")).to_contain_text("Version 2")
    expect(page.locator(".lead")).to_have_text(EVIL)  # shown as text: escaped, not run
    assert page.evaluate("window.__pwned") is None
    rows = page.locator("#versions tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(1)).to_contain_text("prod")
    expect(page.locator("#aliases")).to_contain_text("prod → 1")
    files = {f["filename"]: f for f in api[0]["files"]}
    for row in page.locator("#files tbody tr").all():
        name = row.locator("td").first.inner_text()
        assert row.locator("code.sha").inner_text() == files[name]["sha256"]
        assert row.locator("td.num").get_attribute("title") == f"{files[name]['size']} bytes"
    expect(page.locator("#fit")).to_contain_text("✓ fits")
    expect(page.locator("#fit a")).to_have_text(catalog.llama)
    expect(page.locator("#config pre")).to_contain_text('"peft_type": "LORA"')
    snippets = page.locator("#use").inner_text()
    assert f'HF_ENDPOINT"] = "{catalog.srv.url}"' in snippets
    assert f'PeftModel.from_pretrained(base_model, "{catalog.chat}", revision="2")' in snippets
    assert f'sdk.pull("{catalog.chat}@2")' in snippets
    expect(page.locator("#lineage svg g.node")).to_have_count(1)
    expect(page.locator("#lineage")).to_contain_text("No parents")
    expect(page.locator("button.copy").first).to_be_visible()  # the one thing JavaScript adds
    shoot(page, "adapter", tmp_path)

    page.locator("#versions a", has_text="1").first.click()
    expect(page).to_have_url(re.compile(rf"/adapters/{catalog.chat}/versions/1$"))
    expect(page.locator("#version h2")).to_contain_text("Version 1")
    expect(page.locator("#version h2")).to_contain_text("prod")
    expect(page.locator("code.commit")).to_have_text(api[1]["commit"])
    page.goto(f"/adapters/{catalog.chat}/versions/{api[1]['commit']}")  # by commit
    expect(page.locator("#version h2")).to_contain_text("Version 1")
    response = page.goto(f"/adapters/{catalog.chat}/versions/7")
    assert response is not None and response.status == 404
    expect(page.locator(".error-page")).to_contain_text("has no version '7'")


def test_base_model_page(page: Page, catalog: Catalog, tmp_path: Path) -> None:
    page.goto(f"/base-models/{catalog.llama}")
    expect(page.locator("h1")).to_have_text(catalog.llama)
    expect(page.locator("#signature")).to_contain_text("LlamaForCausalLM")
    q_proj = page.locator("table.modules tr", has_text="model.layers.*.self_attn.q_proj")
    expect(q_proj).to_contain_text("Linear")
    expect(q_proj.locator("td").last).to_have_text("2")  # two layers folded into one row
    expect(page.locator("#compatible h2")).to_contain_text(f"({BULK + 1})")  # the private one is not counted
    shoot(page, "base-model", tmp_path)
    compatible = cards(page)
    page.locator("#compatible a[rel=next]").click()
    compatible += cards(page)
    assert catalog.chat in compatible and catalog.summarizer not in compatible and catalog.secret not in compatible
    assert len(compatible) == BULK + 1
    page.locator("#compatible a.adapter-link", has_text=catalog.chat).click()
    expect(page).to_have_url(re.compile(rf"/adapters/{catalog.chat}$"))


def test_private_adapter_only_after_sign_in(page: Page, catalog: Catalog, tmp_path: Path) -> None:
    page.goto("/adapters?q=secret-sauce")
    assert catalog.secret not in cards(page)
    response = page.goto(f"/adapters/{catalog.secret}")
    assert response is not None and response.status == 404
    expect(page.locator(".error-page")).to_contain_text("sign in")

    page.locator(".error-page a", has_text="sign in").click()
    page.locator("input[name=token]").fill("arg_not-a-real-token")
    page.locator("form[action='/sign-in'] button").click()
    expect(page.locator(".error")).to_contain_text("unknown or revoked token")
    shoot(page, "sign-in", tmp_path)

    page.locator("input[name=token]").fill(catalog.other_token)  # a token of another namespace
    page.locator("form[action='/sign-in'] button").click()
    expect(page).to_have_url(re.compile(rf"/adapters/{catalog.secret}$"))
    expect(page.locator(".error-page")).to_contain_text("404")
    page.locator("form[action='/sign-out'] button").click()

    page.goto(f"/sign-in?next=/adapters/{catalog.secret}")
    page.locator("input[name=token]").fill(catalog.read_token)
    page.locator("form[action='/sign-in'] button").click()
    expect(page).to_have_url(re.compile(rf"/adapters/{catalog.secret}$"))
    expect(page.locator(".title-row .badge.private")).to_be_visible()
    expect(page.locator(".who")).to_contain_text(catalog.ns)
    cookie = next(c for c in page.context.cookies() if c["name"] == "registry_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert cookie["value"] not in (catalog.read_token, catalog.other_token)  # a session id, not the token
    assert "registry_session" not in page.evaluate("document.cookie")
    page.goto("/adapters?q=secret-sauce")
    assert catalog.secret in cards(page)
    # the cookie is for pages only: the JSON API still wants a bearer token
    assert page.request.get(f"/api/v1/adapters/{catalog.secret}").status == 404

    page.locator("form[action='/sign-out'] button").click()
    expect(page.locator(".who")).to_contain_text("Sign in")
    response = page.goto(f"/adapters/{catalog.secret}")
    assert response is not None and response.status == 404


def test_error_pages_and_api_errors(page: Page, catalog: Catalog, tmp_path: Path) -> None:
    response = page.goto("/no/such/page")
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    expect(page.locator(".error-page h1")).to_have_text("Not found")
    expect(page.locator(".error-page")).to_contain_text("There is no page at /no/such/page")
    shoot(page, "404", tmp_path)
    response = page.goto(f"/base-models/{catalog.ns}-base/nothing")
    assert response is not None and response.status == 404
    expect(page.locator(".error-page")).to_contain_text("is not registered")
    # API clients keep RFC 9457 problem details, even from a browser
    response = page.goto(f"/api/v1/adapters/{catalog.ns}/nothing")
    assert response is not None and response.status == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == f"adapter {catalog.ns}/nothing not found"
    plain = httpx.get(f"{catalog.srv.url}/no/such/page")
    assert plain.status_code == 404 and plain.headers["content-type"] == "application/problem+json"


def test_jobs_page_without_jobs(page: Page, catalog: Catalog) -> None:
    """Merge jobs do not exist yet (issue 7): the list is empty and a job page is a 404."""
    page.goto("/jobs")
    expect(page.locator("table.jobs")).to_contain_text("No merge jobs yet.")
    response = page.goto("/jobs/1")
    assert response is not None and response.status == 404
    expect(page.locator(".error-page")).to_contain_text("merge job '1' not found")


# --- the lineage drawing -----------------------------------------------------------------------------


def test_lineage_layout_puts_parents_left_of_children() -> None:
    """A version merged from two versions, one of them itself a merge: three columns, edges left to right."""
    nodes = {k: Node(k, f"ns/{k}@1", f"/adapters/ns/{k}/versions/1", current=k == "m2")
             for k in ("a", "b", "c", "m1", "m2")}
    edges = [Edge("a", "m1", "weight 0.5"), Edge("b", "m1"), Edge("m1", "m2"), Edge("c", "m2"), Edge("a", "m2")]
    drawing = layout(Lineage(nodes, edges))
    x = {p.node.key: p.x for p in drawing.nodes}
    assert x["a"] == x["b"] < x["m1"] < x["m2"]  # "a" feeds both merges: placed by its longest path
    assert x["c"] == x["m1"]
    assert len(drawing.edges) == len(edges)
    assert drawing.width == x["m2"] + NODE_W + 8
    assert [e.label for e in drawing.edges if e.label] == ["weight 0.5"]
    alone = layout(Lineage({"m": Node("m", "ns/m@1", None, current=True)}, []))
    assert len(alone.nodes) == 1 and not alone.edges
