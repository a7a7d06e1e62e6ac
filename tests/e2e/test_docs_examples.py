"""Every runnable block of the documentation (``docs/**/*.md``, marked ``<!-- runnable -->``) runs,
page by page in order, against a live registry (a real ``adapter-registry serve`` on its embedded
default, with one merge worker), so the examples cannot rot. Pages use the documented defaults
(``http://127.0.0.1:8000``, ``~/.local/share/adapter-registry``); the runner points them at this
registry instead, and starts each page with ``ADAPTER_REGISTRY_URL`` and ``ADAPTER_REGISTRY_TOKEN`` (namespace
``alice``) set, as the quickstart's step 2 leaves them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_server import Server, start_server, stop_server
from runnable_blocks import Session, runnable_blocks, session_env

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if runnable_blocks(p))
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_DATA_DIR = "~/.local/share/adapter-registry"


@pytest.fixture(scope="module")
def docs_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A registry of its own (the pages create ``alice/...`` names) and a merge worker on its data dir."""
    srv = start_server(tmp_path_factory.mktemp("docs-registry"), {"ADAPTER_REGISTRY_S3_BUCKET": ""})
    exe = shutil.which("adapter-registry", path=str(Path(sys.executable).parent)) or "adapter-registry"
    log = srv.data_dir / "worker.log"
    worker = subprocess.Popen([exe, "worker", "--data-dir", str(srv.data_dir), "--log-level", "warning"],
                              stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                              env={**os.environ, "ADAPTER_REGISTRY_S3_BUCKET": ""})
    try:
        deadline = time.monotonic() + 180
        while b"adapter-registry worker" not in log.read_bytes():
            assert worker.poll() is None, f"the worker exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.3)
        yield srv
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        stop_server(srv)


def test_the_quickstart_is_runnable() -> None:
    """The pages the issue requires to run are marked (a lost marker would silently skip them)."""
    quickstart = runnable_blocks(DOCS / "quickstart.md")
    assert [b.lang for b in quickstart][:2] == ["bash", "python"] and len(quickstart) >= 4


def test_a_marker_without_a_block_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n<!-- runnable -->\n\n```python\nprint(1)\n```\n")
    with pytest.raises(ValueError, match="must be followed by"):
        runnable_blocks(page)
    page.write_text("<!-- runnable -->\n```python\nprint(1)\n")
    with pytest.raises(ValueError, match="never closed"):
        runnable_blocks(page)


def test_a_failing_block_fails_with_its_place(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- runnable -->\n```bash\nexport X=1\n```\n<!-- runnable -->\n```python\n"
                    "import os\nassert os.environ['X'] == '1'\nraise KeyError('boom')\n```\n")
    session = Session(session_env(os.environ, tmp_path), tmp_path, {})
    first, second = runnable_blocks(page)
    session.run(first)
    with pytest.raises(AssertionError, match=r"page.md:6: the python block raised KeyError"):
        session.run(second)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_runnable_blocks_run(page: Path, docs_registry: Server, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    import sdk

    monkeypatch.setattr(sdk, "_default_client", None)  # each page configures the client from its own env
    home = tmp_path / "home"
    home.mkdir()
    env = {**session_env(os.environ, home), "ADAPTER_REGISTRY_URL": docs_registry.url,
           "ADAPTER_REGISTRY_TOKEN": docs_registry.token("alice", "write")}  # as the quickstart's step 2 leaves them
    session = Session(env, tmp_path,
                      {DEFAULT_URL: docs_registry.url, DEFAULT_DATA_DIR: str(docs_registry.data_dir)})
    for block in runnable_blocks(page):
        session.run(block)
