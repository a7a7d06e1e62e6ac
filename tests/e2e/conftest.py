"""End-to-end fixtures: the registry as a real process (``adapter-registry serve``, uvicorn) on the
embedded PostgreSQL, with blobs in SeaweedFS (S3) or a local directory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from e2e_server import Server, start_server, stop_server
from hostile_kit import Seeded, seed
from playwright.sync_api import Browser, sync_playwright
from s3_fixtures import *  # noqa: F403  (s3_server)
from web_kit import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, s3_server) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """One registry process for the e2e session, storing blobs in SeaweedFS."""
    bucket = f"e2e-{uuid.uuid4().hex[:8]}"
    env = s3_server.env(bucket)
    srv = start_server(tmp_path_factory.mktemp("registry"), env)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A registry process on its embedded default (local blobs), as `scripts/run.sh` starts it."""
    srv = start_server(tmp_path_factory.mktemp("registry-local"), {"ADAPTER_REGISTRY_S3_BUCKET": ""})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A registry of its own on the embedded default, with a little content (see ``hostile_kit``), for the
    hostile-input table and the schema fuzzing, which write junk no other test should see."""
    folder = tmp_path_factory.mktemp("registry-hostile")
    srv = start_server(folder / "data", {"ADAPTER_REGISTRY_S3_BUCKET": ""})
    try:
        yield seed(srv, folder)
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Debian Chromium (never a downloaded one) per browser test module: Playwright's sync API keeps an
    event loop running while it is open, which the asyncio tests of later modules must not meet."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
