"""Merge jobs as people follow them, end to end: in Debian's Chromium (Playwright) a job's page updating
its row in place while its progress moves (a small script polls the job's status; no page reloads), the
merged version's lineage drawn as SVG, a merged full model's link to its base-model page; and the
``adapters merge`` / ``adapters jobs`` commands. The registry runs as a real process (embedded
PostgreSQL, local blobs) with one real ``adapter-registry worker`` made slow enough to watch (a pause at
every step; see ``web_jobs_kit``).

Set ``ADAPTER_HUB_SCREENSHOTS=docs`` to refresh the README's pictures ``docs/web-job.png`` and
``docs/web-lineage.png``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from click.testing import Result
from playwright.sync_api import Browser, Locator, Page, expect
from playwright.sync_api import Error as PlaywrightError
from typer.testing import CliRunner
from web_jobs_kit import WorkerPool, saved_lora, tiny_llama
from web_kit import DESKTOP, check_page, shoot

from sdk.cli import app
from sdk.client import Client

if TYPE_CHECKING:
    from e2e_server import Server

Row = tuple[str, int]  # (state, percent) as one rendering of a job row shows them


@dataclass
class Scene:
    """A namespace with a write token, two base models and four adapters to merge."""

    srv: Server
    ns: str
    token: str
    cache: Path

    def client(self) -> Client:
        return Client(self.srv.url, self.token, cache_dir=self.cache, quiet=True)

    def api(self, path: str) -> Any:
        r = httpx.get(f"{self.srv.url}{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def pool(local_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    """One slow worker running two jobs at once; started first, it boots while the scene is pushed."""
    workers = WorkerPool.start(local_server, tmp_path_factory.mktemp("web-jobs-workers"), concurrency=2)
    yield workers
    workers.stop()
    assert not workers.tracebacks(), workers.tracebacks()


@pytest.fixture(scope="module")
def scene(local_server: Server, pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """``ns/llama`` (signature only) with adapters alpha, beta, gamma; ``ns/small`` (one layer, weights
    stored, for full-model merges) with adapter delta."""
    tmp = tmp_path_factory.mktemp("web-jobs")
    ns = f"wj{uuid.uuid4().hex[:6]}"
    s = Scene(local_server, ns, local_server.token(ns, "read", "write"), tmp / "cache")
    with s.client() as c:
        c.register_base_model(tiny_llama(), f"{ns}/llama")
        c.register_base_model(tiny_llama(layers=1), f"{ns}/small", weights=True)
        for seed, name in enumerate(("alpha", "beta", "gamma"), start=1):
            c.push(saved_lora(tmp / name, seed=seed), f"{ns}/{name}", f"{ns}/llama")
        c.push(saved_lora(tmp / "delta", seed=4, layers=1), f"{ns}/delta", f"{ns}/small")
    return s


# --- the browser --------------------------------------------------------------------------------------


@pytest.fixture
def page(browser: Browser, scene: Scene) -> Iterator[Page]:
    """A fresh page with JavaScript on (it keeps the job rows up to date)."""
    ctx = browser.new_context(base_url=scene.srv.url, viewport=DESKTOP)
    ctx.set_default_timeout(15_000)
    yield ctx.new_page()
    ctx.close()


def sign_in(page: Page, token: str, then: str) -> None:
    page.goto(f"/sign-in?next={then}")
    page.locator("input[name=token]").fill(token)
    page.locator("form[action='/sign-in'] button").click()
    expect(page).to_have_url(re.compile(re.escape(then) + "$"))


def read_row(row: Locator) -> Row:
    """State and percent from one read of the row (both from the same rendering of the page)."""
    text = row.inner_text()
    state = re.search(r"\b(queued|running|succeeded|failed|cancelled)\b", text)
    pct = re.search(r"(\d+)%", text)
    assert state and pct, text
    return state.group(1), int(pct.group(1))


def wait_row(row: Locator, until: Callable[[Row], bool], timeout: float = 45) -> Row:
    """Read the row until ``until`` holds; the page updates it meanwhile (nothing here reloads it)."""
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            seen = read_row(row)
        except PlaywrightError:  # read while the page was being replaced by its refresh
            continue
        if until(seen):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"the job row never got there; last seen {seen}")


def test_job_progress_lineage_and_merged_model_in_the_browser(page: Page, scene: Scene, pool: WorkerPool,
                                                              tmp_path: Path) -> None:
    ns = scene.ns
    pool.ready()
    with scene.client() as c:
        model_job = c.merge([(f"{ns}/delta@1", 0.8)], f"{ns}/small-plus-delta", into="model", wait=False)
        job = c.merge([(f"{ns}/alpha@1", 0.5), (f"{ns}/beta@latest", 0.3), (f"{ns}/gamma@1", 0.2)], f"{ns}/blend",
                      alias="prod", description="alpha, beta and gamma in one", wait=False)

    sign_in(page, scene.token, "/jobs")
    row = page.locator(f"tr.job[data-job='{job.id}']")
    assert read_row(row)[0] in ("queued", "running")
    expect(page.locator(f"tr.job[data-job='{model_job.id}']")).to_contain_text(f"{ns}/delta@1 ×0.8")
    expect(row).to_contain_text(f"{ns}/alpha@1 ×0.5, {ns}/beta@1 ×0.3, {ns}/gamma@1 ×0.2")  # pinned to numbers
    row.locator("a").first.click()
    expect(page).to_have_url(re.compile(rf"/jobs/{job.id}$"))

    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))
    row = page.locator("tr.job")
    first = wait_row(row, lambda r: r[0] != "queued")
    assert first[0] == "running", f"never saw the job running: {first}"
    expect(page.locator("form.cancel button")).to_be_visible()  # the signed-in writer may cancel it
    check_page(page, "a running job's page")
    second = wait_row(row, lambda r: r[1] != first[1])
    assert second[1] > first[1], (first, second)  # progress only goes forward
    shoot(page.locator("body"), "job", tmp_path)  # the whole page, cut to its content
    final = wait_row(row, lambda r: r[0] not in ("queued", "running"))
    assert final == ("succeeded", 100), final
    assert loads == [], loads  # updated in place: no reloads, no <meta refresh> (scroll and focus stay)
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    expect(page.locator("dl.facts")).to_contain_text(f"{ns}/blend (adapter)")
    expect(page.locator("dl.facts")).to_contain_text("weight 0.3")  # the inputs, linked
    expect(page.locator("dl.facts a", has_text=f"{ns}/beta@1")).to_have_attribute("href",
                                                                                 f"/adapters/{ns}/beta/versions/1")
    page.reload()
    expect(page.locator("dd.duration")).to_have_text(re.compile(r"^\d+ (s|min)"))
    expect(page.locator("form.cancel")).to_have_count(0)  # finished: nothing to cancel

    result = page.locator("tr.job td.result a")
    expect(result).to_have_text(f"{ns}/blend@1")
    result.click()
    expect(page).to_have_url(re.compile(rf"/adapters/{ns}/blend/versions/1$"))
    expect(page.locator("#version h2")).to_contain_text("prod")
    svg = page.locator("#lineage svg.lineage")
    nodes = svg.locator("g.node > text:first-of-type")
    expect(nodes).to_have_count(4)
    assert sorted(nodes.all_text_contents()) == sorted(f"{ns}/{n}@1" for n in ("alpha", "beta", "blend", "gamma"))
    expect(svg.locator("g.node.current > text")).to_have_text(f"{ns}/blend@1")
    expect(svg.locator("path.edge")).to_have_count(3)
    assert sorted(svg.locator("text.edge-label").all_text_contents()) == [  # method and weight
        "linear · weight 0.2", "linear · weight 0.3", "linear · weight 0.5"]
    expect(page.locator("#lineage")).not_to_contain_text("No parents")
    assert page.locator("svg[role=img] a").count() == 0  # links in a group, which keyboards reach
    page.locator("#lineage").scroll_into_view_if_needed()
    check_page(page, "a merged version's page")
    shoot(page.locator("#lineage"), "lineage", tmp_path)
    beta = svg.locator(f"a[aria-label='{ns}/beta@1']")
    beta.focus()
    expect(beta).to_be_focused()
    page.keyboard.press("Enter")  # a parent links to its page
    expect(page).to_have_url(re.compile(rf"/adapters/{ns}/beta/versions/1$"))
    expect(page.locator("#lineage")).to_contain_text("No parents")

    # the full-model merge: its row links to the new base model's page
    page.goto(f"/jobs/{model_job.id}")
    assert wait_row(page.locator("tr.job"), lambda r: r[0] not in ("queued", "running"), timeout=60) == (
        "succeeded", 100)
    cell = page.locator("tr.job td.result")
    expect(cell).to_contain_text("(base model)")
    expect(cell.locator("a")).to_have_text(f"{ns}/small-plus-delta")
    expect(page.locator("dl.facts")).to_contain_text(f"{ns}/small-plus-delta (model)")
    page.goto("/jobs")
    expect(page.locator(f"tr.job[data-job='{model_job.id}'] td.result a")).to_have_text(f"{ns}/small-plus-delta")
    page.locator(f"tr.job[data-job='{model_job.id}'] td.result a").click()
    expect(page).to_have_url(re.compile(rf"/base-models/{ns}/small-plus-delta$"))
    expect(page.locator("h1")).to_have_text(f"{ns}/small-plus-delta")
    expect(page.locator(".title-row")).to_contain_text("weights stored")


# --- the command line ---------------------------------------------------------------------------------


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(*args: str | Path) -> Result:
    result = cli(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def failed(*args: str | Path) -> str:
    """stderr of a command that must fail with exit 1 and nothing on stdout."""
    result = cli(*args)
    assert result.exit_code == 1 and result.stdout == "", (result.stdout, result.stderr, result.exception)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_cli_merge_and_jobs(scene: Scene, pool: WorkerPool, monkeypatch: pytest.MonkeyPatch,
                            tmp_path: Path) -> None:
    for var in ("ADAPTER_REGISTRY_URL", "ADAPTER_REGISTRY_TOKEN", "ADAPTER_REGISTRY_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ADAPTER_REGISTRY_CONFIG", str(tmp_path / "login.json"))
    ns, opts = scene.ns, ["--url", scene.srv.url, "--token", scene.token, "--cache-dir", str(tmp_path / "c")]
    pool.ready()

    body = json.loads(ok(*opts, "merge", f"{ns}/alpha@1:0.7", f"{ns}/beta:0.3", "-o", f"{ns}/cli-blend",
                         "--alias", "prod", "--json").stdout)
    assert body["state"] == "succeeded" and body["progress"] == 1.0, body
    assert body["result"]["ref"] == f"{ns}/cli-blend@1"
    version = scene.api(f"/api/v1/adapters/{ns}/cli-blend/versions/prod")
    assert [(p["adapter"], p["version"], p["weight"]) for p in version["parents"]] == [
        (f"{ns}/alpha", 1, 0.7), (f"{ns}/beta", 1, 0.3)]

    human = ok(*opts, "merge", f"{ns}/gamma@1", f"{ns}/alpha@1:-0.5", "--type", "dare_linear", "--density", "0.5",
               "--seed", "3", "-o", f"{ns}/cli-blend")
    assert human.stdout.splitlines()[0] == f"merged into {ns}/cli-blend@2"
    dare_id = human.stdout.splitlines()[1].removeprefix("job ")
    shown = json.loads(ok(*opts, "jobs", "show", dare_id, "--json").stdout)
    assert shown["combination_type"] == "dare_linear" and shown["state"] == "succeeded"
    assert shown["parameters"]["density"] == 0.5 and shown["parameters"]["seed"] == 3
    assert [i["weight"] for i in shown["inputs"]] == [1.0, -0.5]
    text = ok(*opts, "jobs", "show", dare_id).stdout
    assert "dare_linear" in text and f"{ns}/cli-blend@2" in text and "100%" in text

    # --no-wait prints only the id; cancel stops it (queued: at once; running: at its next step)
    queued = ok(*opts, "merge", f"{ns}/alpha@1", f"{ns}/beta@1", f"{ns}/gamma@1", "--type", "cat",
                "-o", f"{ns}/cli-cancelled", "--no-wait")
    slow_id = queued.stdout.strip()
    assert str(uuid.UUID(slow_id)) == slow_id and f"jobs show {slow_id} --wait" in queued.stderr
    assert slow_id in ok(*opts, "jobs", "cancel", slow_id).stdout
    stderr = failed(*opts, "jobs", "show", slow_id, "--wait", "--timeout", "30")
    assert stderr == f"error: merge job {slow_id} cancelled\n"
    assert "already cancelled" in failed(*opts, "jobs", "cancel", slow_id)
    assert cli(*opts, "info", f"{ns}/cli-cancelled").exit_code == 1  # nothing was published

    listed = json.loads(ok(*opts, "jobs", "ls", "--namespace", ns, "--json").stdout)
    assert {body["id"], dare_id, slow_id} <= {j["id"] for j in listed["items"]}
    table = ok(*opts, "jobs", "ls", "--state", "cancelled", "--namespace", ns).stdout
    assert slow_id in table and dare_id not in table and "cat" in table
    assert "no merge jobs found" in cli(*opts, "jobs", "ls", "--namespace", f"{ns}-nobody").stderr

    # bad input and refusals: one line (plus one per problem), exit 1, nothing queued
    assert "finite number as weight" in failed(*opts, "merge", f"{ns}/alpha@1:heavy", "-o", f"{ns}/x")
    assert "namespace/name" in failed(*opts, "merge", "alpha@1", "-o", f"{ns}/x")
    assert "only apply to adapter outputs" in failed(*opts, "merge", f"{ns}/delta@1", "--into", "model",
                                                     "-o", f"{ns}/m", "--alias", "prod")
    refused = failed(*opts, "merge", f"{ns}/alpha@7", f"{ns}/nope@1", "-o", f"{ns}/x").splitlines()
    assert refused[0] == "error: the registry refused the merge (2 problems):", refused
    assert refused[1].startswith("  - ") and "has no version '7'" in refused[1], refused
    assert refused[2].startswith("  - ") and f"{ns}/nope not found" in refused[2], refused
    assert "different base models" in failed(*opts, "merge", f"{ns}/alpha@1", f"{ns}/delta@1", "-o", f"{ns}/x")
    assert "needs density" in failed(*opts, "merge", f"{ns}/alpha@1", f"{ns}/beta@1", "--type", "ties",
                                     "-o", f"{ns}/x")
    assert "404" in failed(*opts, "jobs", "show", str(uuid.uuid4()))
    after = json.loads(ok(*opts, "jobs", "ls", "--namespace", ns, "--json").stdout)
    assert after["total"] == listed["total"]
