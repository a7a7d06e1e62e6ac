"""The documentation site builds with ``mkdocs build --strict`` (broken links, missing references and
undocumented public names fail it), offline, and its generated reference pages cover every public SDK
name, every command, every REST route and every setting."""

from __future__ import annotations

import dataclasses
import html
import importlib.util
import logging
import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_CPU_SECONDS = 60  # CPU time, not wall time: the test machines are shared


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate_hook", ROOT / "docs" / "hooks" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for the module as CI builds it."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < BUILD_CPU_SECONDS, f"the docs build took {cpu:.0f} s of CPU time"
    return out


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def test_every_public_sdk_name_is_in_the_reference(site: Path) -> None:
    import sdk
    import sdk.client

    page = (site / "reference" / "sdk.html").read_text(encoding="utf-8")
    missing = [n for n in sdk.__all__ if f'id="sdk.{n}"' not in page]
    assert not missing, f"not in the SDK reference: {missing}"
    page = (site / "reference" / "client.html").read_text(encoding="utf-8")
    assert not [n for n in sdk.client.__all__ if f'id="sdk.client.{n}"' not in page]


def test_every_command_route_and_setting_is_in_the_reference(site: Path) -> None:
    import typer

    from registry_service.cli import app as service_app
    from registry_service.settings import Settings, WorkerSettings
    from sdk.cli import app as client_app

    cli = _text(site / "reference" / "cli.html")
    for name, app in (("adapters", client_app), ("adapter-registry", service_app)):
        group = typer.main.get_command(app)
        for command in group.commands:  # type: ignore[attr-defined]
            assert f"{name} {command}" in cli, f"`{name} {command}` is not in the command-line reference"
    rest = _text(site / "reference" / "rest-api.html")
    for route in ("/api/v1/adapters/{ns}/{name}/versions", "/api/v1/merge-jobs", "/api/v1/tokens",
                  "/{ns}/{name}/resolve/{rest}"):
        assert route in rest
    settings = _text(site / "reference" / "settings.html")
    for cls in (Settings, WorkerSettings):
        for field in cls.model_fields:
            assert cls.env_name(field) in settings


def test_the_site_is_offline(site: Path) -> None:
    """No page loads anything from the network (fonts, scripts, styles, analytics)."""
    remote = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["'](?:https?:)?//""", re.I)
    for page in site.rglob("*.html"):
        found = remote.findall(page.read_text(encoding="utf-8"))
        assert not found, f"{page.relative_to(site)} loads {found}"
    assert not list(site.rglob("*.css")) or "fonts.googleapis" not in "".join(
        p.read_text(encoding="utf-8", errors="replace") for p in site.rglob("*.css"))


def test_the_benchmarks_page_includes_bench_readme(site: Path) -> None:
    """One copy of the benchmark tables: the page is bench/README.md, included at build time."""
    page = _text(site / "benchmarks.html")
    for line in (ROOT / "bench" / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            assert line[3:].replace("`", "").strip() in page.replace("`", "")


def test_undocumented_public_names_and_settings_warn(caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes a strict build fail: a warning for each public name without a docstring and each setting
    without a ``#:`` comment."""
    hook = _hook()

    def documented() -> None:
        """Has one."""

    def bare() -> None:
        pass

    class Inherits(ValueError):
        pass

    @dataclasses.dataclass
    class Plain:
        x: int

    namespace = SimpleNamespace(documented=documented, bare=bare, Inherits=Inherits, Plain=Plain)
    assert hook.undocumented(["documented", "bare", "Inherits", "Plain"], namespace) == ["bare", "Inherits", "Plain"]

    import sdk

    monkeypatch.setattr(sdk, "bare", bare, raising=False)
    monkeypatch.setattr(sdk, "__all__", [*sdk.__all__, "bare"])
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.generate"):
        page = hook.sdk_reference()
    assert "::: sdk.bare" in page
    assert any("sdk.bare is public" in r.getMessage() for r in caplog.records)

    class Some:
        #: Documented.
        a: int = 1
        b: int = 2
        #: Two lines
        #: of comment.
        c: int = 3

    assert hook.field_comments(Some) == {"a": "Documented.", "c": "Two lines of comment."}


def test_readme_links_stay_in_the_repository() -> None:
    """The README stands alone on GitHub: every link is relative and points at a file of the repository."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        assert not re.match(r"^[a-z]+:|^/", link), f"the README links outside the repository: {link}"
        assert (ROOT / link.split("#", 1)[0]).is_file(), f"the README links to a missing file: {link}"
