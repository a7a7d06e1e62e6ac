"""The web UI in a real browser: Debian's Chromium driven by Playwright against the registry running
as a real process (embedded PostgreSQL, local blobs), with adapters pushed by the SDK client.

Browsing, search and filters run with JavaScript turned off (the UI must work without it). Every page is
checked at 1280×900 and 390×844 (no horizontal overflow) and by axe-core (no critical or serious finding);
the "Use it" snippets are run as shown against the live registry. Set ``ADAPTER_HUB_SCREENSHOTS=docs`` to
refresh the README's screenshots in ``docs/``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import torch
from playwright.sync_api import Browser, BrowserContext, Page, expect
from test_client import logits, saved_adapter, tiny_llama, token_ids, trained_adapter
from web_kit import DESKTOP, PHONE, check_page, overflow, shoot

from registry_service.domain.merge_jobs.lineage import Edge, Lineage, Node
from registry_service.web.lineage import LABEL_CHARS, NODE_W, layout
from sdk.client import Client

if TYPE_CHECKING:
    from e2e_server import Server

BULK = 21  # one more than a page of the adapter list
EVIL = "Answers politely. <script>window.__pwned = 1</script><b>bold?</b>"
#: The README of chat-helper's version 2: front matter, a table, code, and things that must not run.
README = """---
license: apache-2.0
datasets: [tatsu-lab/alpaca]
tags: [chat]
base_model: {base}
model-index:
- name: chat-helper
  results:
  - task: {{type: text-generation}}
    dataset: {{name: alpaca-eval}}
    metrics: [{{name: accuracy, value: 0.71}}]
---
# Chat helper

Polite answers for the tiny Llama.

| split | accuracy | note |
|---|--:|---|
| eval | 0.71 | {long} |

```python
print("hello")
```

<script>window.__pwned = 2</script>
[a trap](javascript:window.__pwned=3) and <img src=x onerror="window.__pwned=4">
"""


@dataclass
class Catalog:
    """What the module pushed: names, tokens, and the base models."""

    srv: Server
    ns: str
    llama: str
    gpt2: str
    read_token: str
    other_token: str
    write_token: str

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
        admin.register_base_model(own_base("llama"), f"{llama}-copy")  # the same signature under another name
    first, second = saved_adapter(tmp / "l1", "llama", 1), saved_adapter(tmp / "l2", "llama", 2)
    (second / "README.md").write_text(README.format(base=llama, long="x" * 300))
    g = saved_adapter(tmp / "g1", "gpt2", 1)
    write = local_server.token(ns, "write")
    with Client(local_server.url, write, cache_dir=tmp / "c", quiet=True) as c:
        c.push(first, f"{ns}/chat-helper", llama, alias="prod", tags=["chat", "en"], description=EVIL)
        c.push(second, f"{ns}/chat-helper", llama)
        c.push(g, f"{ns}/summarizer", gpt2, tags=["summarize"], description="Short summaries of long text.")
        c.push(first, f"{ns}/secret-sauce", llama, private=True, description="Not for everyone.")
        for i in range(BULK):
            c.push(first, f"{ns}/bulk-{i:02d}", llama, tags=["bulk"])
    return Catalog(local_server, ns, llama, gpt2, local_server.token(ns, "read"),
                   local_server.token(f"{ns}-other", "read"), write)


def _context(browser: Browser, catalog: Catalog, *, javascript: bool, viewport: dict | None = None) -> BrowserContext:
    ctx = browser.new_context(base_url=catalog.srv.url, java_script_enabled=javascript,
                              viewport=viewport or DESKTOP)
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


def sign_in(page: Page, token: str, then: str) -> None:
    page.goto(f"/sign-in?next={then}")
    page.locator("input[name=token]").fill(token)
    page.locator("form[action='/sign-in'] button").click()
    expect(page).to_have_url(re.compile(re.escape(then) + "$"))


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
    expect(page.locator("select[name=method] option:checked")).to_have_text("LoRA")  # names people read
    page.goto(f"/adapters?q=chat-helper&base_model={catalog.gpt2}")
    expect(page.locator("ul.cards")).to_have_text("No adapters match.")
    page.goto(f"/adapters/{catalog.summarizer}")
    page.locator(".title-row a.tag", has_text="summarize").click()
    expect(page).to_have_url(re.compile(r"/adapters\?tag=summarize$"))
    assert catalog.summarizer in cards(page) and catalog.chat not in cards(page)


def test_search_words_anywhere_and_base_model_by_signature(plain_page: Page, catalog: Catalog) -> None:
    """Words in any order and case, from name, description, tags and base-model name; the base-model filter
    lists what fits the same signature, like the base model's page."""
    page = plain_page
    ns = catalog.ns
    for q, want in ((f"ANSWERS {ns} helper", [catalog.chat]),  # description + namespace + name, not adjacent
                    (f"summarize {ns}", [catalog.summarizer]),  # a tag
                    (f"tiny-GPT2 {ns}", [catalog.summarizer]),  # the base model's name
                    (f"{ns} politely bulk", [])):
        page.goto(f"/adapters?q={q}")
        assert cards(page) == want, q
    page.goto(f"/adapters?q={ns}&base_model={catalog.llama}-copy")  # no adapter was pushed under this name
    expect(page.locator(".count")).to_have_text(f"{BULK + 1} adapters")
    page.goto(f"/adapters?base_model={ns}-base/nothing")
    expect(page.locator(".notice")).to_contain_text("No base model is registered")


def test_paging_sorting_and_namespace_pages(plain_page: Page, catalog: Catalog, tmp_path: Path) -> None:
    page = plain_page
    page.goto(f"/adapters?q={catalog.ns}&tag=bulk")
    expect(page.locator(".pager")).to_contain_text("page 1 of 2")
    first = cards(page)
    assert len(first) == 20
    shoot(page, "adapters", tmp_path)
    page.locator(".pager a[aria-label='page 2']").click()
    expect(page).to_have_url(re.compile(r"page=2"))
    expect(page.locator(".pager [aria-current=page]")).to_have_text("2")
    second = cards(page)
    assert len(second) == BULK - 20 and not set(first) & set(second)
    assert all(name.startswith(f"{catalog.ns}/bulk-") for name in first + second)
    page.locator("a[rel=prev]").click()
    assert cards(page) == first
    page.goto(f"/adapters?q={catalog.ns}&tag=bulk&page=9")
    expect(page.locator(".notice")).to_contain_text("Page 9 is past the end: there are 2 pages")
    assert cards(page) == []
    weights = "/versions/1/files/adapter_model.safetensors"
    for url in (f"/api/v1/adapters/{catalog.ns}/bulk-07{weights}", f"/adapters/{catalog.ns}/bulk-07{weights}",
                f"/{catalog.ns}/bulk-07/resolve/1/adapter_model.safetensors"):  # API, web page, Hub API
        assert httpx.get(f"{catalog.srv.url}{url}", follow_redirects=True).status_code == 200
    assert httpx.get(f"{catalog.srv.url}/api/v1/adapters/{catalog.ns}/bulk-03{weights}",
                     headers={"Range": "bytes=10-20"}).status_code == 206  # a later part: not a new download
    page.goto(f"/adapters?q={catalog.ns}&tag=bulk&sort=downloads")
    expect(page.locator("ul.cards .card").first).to_contain_text("3 downloads")
    assert cards(page)[0] == f"{catalog.ns}/bulk-07"
    assert "0 downloads" in page.locator("ul.cards .card", has_text=f"{catalog.ns}/bulk-03").inner_text()
    page.goto(f"/adapters?q={catalog.ns}&tag=bulk&sort=name")
    assert cards(page) == [f"{catalog.ns}/bulk-{i:02d}" for i in range(20)]  # by name, not newest first
    page.locator("a[rel=next]").click()
    expect(page).to_have_url(re.compile(r"sort=name"))  # paging keeps the order

    page.goto(f"/adapters/{catalog.summarizer}")
    page.locator(".title-row h1 a.ns").click()
    expect(page).to_have_url(re.compile(rf"/adapters/{catalog.ns}$"))
    expect(page.locator("h1")).to_have_text(f"Adapters of {catalog.ns}")
    expect(page.locator(".count")).to_have_text(f"{BULK + 2} adapters")
    sign_in(page, catalog.read_token, f"/adapters/{catalog.ns}")
    expect(page.locator(".count")).to_have_text(f"{BULK + 3} adapters")  # its private one too


def test_adapter_page_model_card_and_versions(page: Page, catalog: Catalog, tmp_path: Path) -> None:
    api = httpx.get(f"{catalog.srv.url}/api/v1/adapters/{catalog.chat}/versions").json()["items"]
    page.goto(f"/adapters/{catalog.chat}")
    expect(page.locator("#version h2")).to_contain_text("Version 2")
    expect(page.locator(".lead")).to_have_text(EVIL)  # shown as text: escaped, not run
    card = page.locator("#card")
    expect(card.locator(".markdown h1")).to_have_text("Chat helper")
    expect(card.locator(".markdown table td").first).to_have_text("eval")
    expect(card.locator(".markdown pre code")).to_have_text('print("hello")\n')
    for label, value in (("License", "apache-2.0"), ("Datasets", "tatsu-lab/alpaca"), ("Base model", catalog.llama)):
        expect(card.locator("dl.chips div", has_text=label).locator("dd")).to_have_text(value)
    expect(card.locator("table.metrics tbody tr")).to_have_text(re.compile(r"text-generation\s*alpaca-eval\s*"
                                                                           r"accuracy\s*0.71"))
    # the README's script, javascript: link and event handler are text, not code
    expect(card.locator(".markdown")).to_contain_text("<script>window.__pwned = 2</script>")
    assert card.locator(".markdown script, .markdown [onerror], .markdown a[href^=javascript]").count() == 0
    assert page.evaluate("window.__pwned") is None
    rows = page.locator("#versions tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(1)).to_contain_text("prod")
    expect(page.locator("#aliases")).to_contain_text("prod → 1")
    expect(page.locator("#version time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    expect(page.locator("#version .author")).to_have_text(f"a token of {catalog.ns}")  # not "token#12"
    files = {f["filename"]: f for f in api[0]["files"]}
    for row in page.locator("#files tbody tr").all():
        name = row.locator("a.file").inner_text()
        assert row.locator("code.sha").inner_text() == files[name]["sha256"]
        assert row.locator("td.num").get_attribute("title") == f"{files[name]['size']} bytes"
    expect(page.locator("#fit")).to_contain_text("✓ fits")
    expect(page.locator("#fit a").first).to_have_text(catalog.llama)
    expect(page.locator("#config pre")).to_contain_text('"peft_type": "LORA"')
    expect(page.locator("#lineage svg g.node")).to_have_count(1)
    expect(page.locator("#lineage")).to_contain_text("No parents")
    expect(page.locator("button.copy").first).to_be_visible()  # the one thing JavaScript adds
    expect(page.locator("#alias-form")).to_have_count(0)  # anonymous: no editing
    shoot(page, "adapter", tmp_path)

    page.locator("#versions a", has_text="1").first.click()
    expect(page).to_have_url(re.compile(rf"/adapters/{catalog.chat}/versions/1$"))
    expect(page.locator("#version h2")).to_contain_text("Version 1")
    expect(page.locator("#version h2")).to_contain_text("prod")
    expect(page.locator("code.commit")).to_have_text(api[1]["commit"])
    expect(page.locator("#card .markdown h1")).to_have_text("LORA adapter")  # the card the SDK wrote
    page.goto(f"/adapters/{catalog.chat}/versions/{api[1]['commit']}")  # by commit
    expect(page.locator("#version h2")).to_contain_text("Version 1")
    response = page.goto(f"/adapters/{catalog.chat}/versions/7")
    assert response is not None and response.status == 404
    expect(page.locator(".error-page")).to_contain_text("has no version '7'")


def _snippet_script(code: str, base_dir: Path, out: Path, base_name: str) -> str:
    """A page's Python snippet made runnable here: its base-model line loads the tiny base model from a local
    folder (the registry holds the base model's signature, not a download of it), and the adapted model's
    logits are saved to compare."""
    quoted = f'"{base_name}"'
    assert code.count(quoted) == 1, code  # the one line a reader changes: where their base model is
    code = code.replace(quoted, repr(str(base_dir)))
    return (f"{code}\nimport torch\nwith torch.no_grad():\n"
            f"    torch.save(model(input_ids=torch.tensor({token_ids().tolist()!r})).logits, {str(out)!r})\n")


def test_snippets_run_as_shown(plain_page: Page, catalog: Catalog, tmp_path: Path) -> None:
    """The SDK, peft and CLI snippets of a version page, pasted into a fresh process (no login, no
    environment), load exactly that version — pinned, and through its alias (``@prod``)."""
    page = plain_page
    page.goto(f"/adapters/{catalog.chat}/versions/1")
    boxes = {b.get_attribute("data-language") + ":" + b.locator(".snippet-head span").inner_text():
             b.locator("pre").inner_text() for b in page.locator(".snippet").all()}
    sdk_code, peft_code = boxes["python:SDK"], boxes["python:peft (Hub-compatible API)"]
    shell = boxes["shell:Command line"]
    root = catalog.srv.url
    assert f'Client("{root}")' in sdk_code and f'endpoint="{root}"' in peft_code and f"--url {root}" in shell
    base_dir = tmp_path / "base"
    tiny_llama(0).save_pretrained(base_dir)
    want = logits(trained_adapter("llama", 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADAPTER_REGISTRY_", "HF_"))}
    env |= {"HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": os.environ.get(
        "PYTHONPATH", "")}
    scripts: list[tuple[str, Path]] = []
    for name, code in (("sdk", sdk_code), ("peft", peft_code)):
        alias = re.search(r'"([^"@]+/[^"@]+@prod)"|revision="(prod)"', code)
        assert alias, f"the {name} snippet does not show the alias form"
        followed = (code.replace(f'"{catalog.chat}@1"', f'"{catalog.chat}@prod"', 1) if name == "sdk"
                    else code.replace('revision="1"', 'revision="prod"', 1))
        assert followed != code
        for variant, text in (("pinned", code), ("alias", followed)):
            script = tmp_path / f"{name}-{variant}.py"
            script.write_text(_snippet_script(text, base_dir, tmp_path / f"{name}-{variant}.pt", catalog.llama))
            scripts.append((f"{name} ({variant})", script))
    # one interpreter runs the four scripts, each in fresh globals, as if pasted one after the other
    driver = "import runpy, sys\nfor path in sys.argv[1:]:\n    runpy.run_path(path, run_name='__main__')\n"
    run = subprocess.run([sys.executable, "-c", driver, *(str(p) for _, p in scripts)], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, f"a snippet failed:\n{run.stderr[-3000:]}"
    for what, script in scripts:
        assert torch.allclose(torch.load(script.with_suffix(".pt")), want, atol=1e-5), f"{what} loaded something else"
    line = shell.strip().splitlines()[-1].split("#")[0].split()
    exe = Path(sys.executable).parent / line[0]
    for ref in (line[-1], f"{catalog.chat}@prod"):
        run = subprocess.run([str(exe), *line[1:-1], ref], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        folder = Path(run.stdout.strip())
        assert (folder / "adapter_model.safetensors").is_file(), run.stdout


def test_signed_in_downloads_and_file_viewer(page: Page, catalog: Catalog) -> None:
    """File links on a private adapter's page work for whoever is signed in there, and for nobody else."""
    files = httpx.get(f"{catalog.srv.url}/api/v1/adapters/{catalog.secret}/versions/1",
                      headers={"Authorization": f"Bearer {catalog.read_token}"}).json()["files"]
    sha = {f["filename"]: f["sha256"] for f in files}
    sign_in(page, catalog.read_token, f"/adapters/{catalog.secret}")
    link = page.locator("#files a.download", has_text="download").first
    href = link.get_attribute("href")
    assert href and href.startswith(f"/adapters/{catalog.secret}/versions/1/files/")
    name = href.rsplit("/", 1)[1]
    with page.expect_download() as info:
        link.click()
    path = info.value.path()
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha[name]
    response = page.request.get(href)
    assert response.status == 200 and "no-store" in response.headers["cache-control"]
    assert httpx.get(f"{catalog.srv.url}{href}").status_code == 404  # no cookie: as if it did not exist

    page.locator("#files a.file", has_text="adapter_config.json").click()
    expect(page.locator("h1")).to_have_text("adapter_config.json")
    expect(page.locator("pre.file-text")).to_contain_text('"peft_type": "LORA"')
    check_page(page, "the file viewer")
    page.goto(f"/adapters/{catalog.chat}/versions/2/view/README.md")
    expect(page.locator(".markdown h1")).to_have_text("Chat helper")
    expect(page.locator("pre.file-text")).to_contain_text("license: apache-2.0")
    page.locator("form[action='/sign-out'] button").click()
    sign_in(page, catalog.other_token, "/")  # signed in, but to another namespace
    assert page.request.get(href).status == 404
    assert page.request.get(href.replace("/files/", "/view/")).status == 404


def test_writers_edit_aliases_description_and_tags(page: Page, catalog: Catalog) -> None:
    """Signed in with write scope: set an alias and edit description and tags from the page (a read token
    sees no forms, and posting them anyway is refused)."""
    sign_in(page, catalog.read_token, f"/adapters/{catalog.summarizer}")
    expect(page.locator("#alias-form")).to_have_count(0)
    refused = page.request.post(f"/adapters/{catalog.summarizer}/aliases", form={"alias": "x", "version": "1"})
    assert refused.status == 403  # no CSRF token: the CSRF check refuses it
    csrf = page.locator("input[name=_csrf_token]").first.get_attribute("value")
    assert csrf
    for action, form in (("aliases", {"alias": "x", "version": "1"}), ("edit", {"description": "vandalised"})):
        refused = page.request.post(f"/adapters/{catalog.summarizer}/{action}", form={**form, "_csrf_token": csrf})
        assert refused.status == 403, action  # a valid CSRF token, but a read token: the scope check refuses it
    info = httpx.get(f"{catalog.srv.url}/api/v1/adapters/{catalog.summarizer}").json()
    assert "x" not in info["aliases"] and info["description"] != "vandalised"
    page.locator("form[action='/sign-out'] button").click()

    sign_in(page, catalog.write_token, f"/adapters/{catalog.summarizer}")
    form = page.locator("#alias-form")
    form.locator("input[name=alias]").fill("stable")
    form.locator("input[name=version]").fill("1")
    form.locator("button").click()
    expect(page.locator("#aliases")).to_contain_text("stable → 1")
    edit = page.locator("#edit-form")
    edit.locator("textarea[name=description]").fill("Summaries, edited in the browser.")
    edit.locator("input[name=tags]").fill("summarize, edited")
    edit.locator("button").click()
    expect(page.locator(".lead")).to_have_text("Summaries, edited in the browser.")
    expect(page.locator(".title-row a.tag")).to_have_text(["edited", "summarize"])
    info = httpx.get(f"{catalog.srv.url}/api/v1/adapters/{catalog.summarizer}").json()
    assert info["aliases"]["stable"] == 1 and info["tags"] == ["edited", "summarize"]
    form.locator("input[name=alias]").fill("latest")
    form.locator("button").click()
    expect(page.locator(".error-page")).to_contain_text("'latest' always points at the newest version")


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

    sign_in(page, catalog.read_token, f"/adapters/{catalog.secret}")
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
    response = page.goto("/jobs/1")
    assert response is not None and response.status == 404
    expect(page.locator(".error-page")).to_contain_text("merge job '1' not found")


def test_queued_job_warns_without_worker_and_can_be_cancelled(page: Page, catalog: Catalog) -> None:
    """No worker runs for this module: a queued job's page says so; anonymous visitors see the (public) job;
    its writer cancels it from the page."""
    with Client(catalog.srv.url, catalog.write_token, quiet=True, cache_dir=catalog.srv.data_dir / "wcache") as c:
        job = c.merge([(f"{catalog.chat}@1", 0.5), (f"{catalog.chat}@2", 0.5)], f"{catalog.ns}/chat-blend",
                      wait=False)
    page.goto("/jobs")
    expect(page.locator(f"tr.job[data-job='{job.id}']")).to_contain_text("queued")  # anonymous, public job
    expect(page.locator(".notice.warning")).to_contain_text("No merge worker has been seen")
    page.goto(f"/jobs/{job.id}")
    expect(page.locator("form.cancel")).to_have_count(0)  # anonymous: no Cancel
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("linear")
    expect(facts.locator("a", has_text=f"{catalog.chat}@2")).to_have_attribute(
        "href", f"/adapters/{catalog.chat}/versions/2")
    expect(facts.locator("dd.duration")).to_have_text("–")
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    sign_in(page, catalog.write_token, f"/jobs/{job.id}")
    page.locator("form.cancel button").click()
    expect(page.locator("tr.job .state")).to_have_text("cancelled")
    expect(page.locator("form.cancel")).to_have_count(0)


def test_every_page_fits_phones_and_passes_axe(browser: Browser, catalog: Catalog, tmp_path: Path) -> None:
    """At 1280×900 and 390×844: no page is wider than the screen, and axe-core finds nothing critical or
    serious (signed in, so the editing forms are checked too)."""
    urls = ["/", f"/adapters?q={catalog.ns}", f"/adapters/{catalog.ns}", f"/adapters/{catalog.chat}",
            f"/adapters/{catalog.chat}/versions/1", f"/adapters/{catalog.chat}/versions/2/view/README.md",
            "/base-models", f"/base-models/{catalog.llama}", "/jobs", "/sign-in", "/no/such/page"]
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        ctx = _context(browser, catalog, javascript=True, viewport=viewport)
        page = ctx.new_page()
        try:
            if name == "phone":
                sign_in(page, catalog.write_token, f"/adapters/{catalog.secret}")
                check_page(page, f"{catalog.secret} (signed in, {name})")
                shoot(page, "adapter-phone", tmp_path)
            for url in urls:
                page.goto(url)
                check_page(page, f"{url} ({name})")
            assert overflow(page) <= 0
        finally:
            ctx.close()


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


def test_lineage_labels_fit_their_boxes() -> None:
    """A 30-character version name is drawn whole, inside its box (12 px monospace, at most 7.3 px a
    character); longer ones are cut with an ellipsis (the full name stays in the node's title)."""
    name = "team-thirty/chars-adapter-x@12"
    assert len(name) == 30 and LABEL_CHARS >= 30
    long = "n" * 40 + "/adapter@1"
    drawing = layout(Lineage({"a": Node("a", name, "/x"), "b": Node("b", long, None, current=True)},
                             [Edge("a", "b", "ties · weight 0.5")]))
    texts = {p.node.key: p.text for p in drawing.nodes}
    assert texts["a"] == name
    assert 10 + 7.3 * len(texts["a"]) <= NODE_W
    assert texts["b"].endswith("…") and len(texts["b"]) == LABEL_CHARS
