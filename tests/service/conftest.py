"""Fixtures for service tests: a real PostgreSQL (embedded), a real S3 server (SeaweedFS),
and the app served in-process over HTTP (Litestar's AsyncTestClient)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient
from registry_testkit import TEMPLATE_DB, Registry, _db_url, embedded_pg
from s3_fixtures import *  # noqa: F403  (the SeaweedFS server and blob-store fixtures)

from registry_service.app import create_app
from registry_service.settings import Settings
from registry_service.storage import LocalBlobStore, S3BlobStore


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One embedded PostgreSQL for the whole session, with a migrated template database."""
    with embedded_pg() as server:
        yield server


@pytest.fixture
def db_url(pg_server: Any) -> Iterator[str]:
    """A fresh database per test, cloned from the migrated template (fast)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB};")
    yield _db_url(pg_server, name)
    pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


@pytest_asyncio.fixture(params=["local", "s3"])
async def registry(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> AsyncIterator[Registry]:
    """The registry on the local backend and on S3 (SeaweedFS)."""
    async for reg in _registry(request, request.param, db_url, tmp_path):
        yield reg


@pytest_asyncio.fixture
async def local_registry(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> AsyncIterator[Registry]:
    """The registry on the local backend only."""
    async for reg in _registry(request, "local", db_url, tmp_path):
        yield reg


@pytest_asyncio.fixture
async def s3_registry(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> AsyncIterator[Registry]:
    """The registry on S3 only (for behaviour only that backend has, e.g. direct uploads)."""
    async for reg in _registry(request, "s3", db_url, tmp_path):
        yield reg


async def _registry(request: pytest.FixtureRequest, kind: str, db_url: str, tmp_path: Path
                    ) -> AsyncIterator[Registry]:
    if kind == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = f"reg-{uuid.uuid4().hex[:10]}"
        settings = Settings(data_dir=tmp_path, database_url=db_url, s3_bucket=bucket, s3_endpoint=s3.endpoint_url,
                            s3_region=s3.region, apply_migrations=False, debug=True,
                            upload_part_bytes=5 * 2**20)
        store: Any = S3BlobStore(bucket, endpoint_url=s3.endpoint_url, region=s3.region)
    else:
        settings = Settings(data_dir=tmp_path, database_url=db_url, apply_migrations=False, debug=True,
                            upload_part_bytes=5 * 2**20)
        store = LocalBlobStore(tmp_path / "blobs")
    app = create_app(settings, store=store)
    async with AsyncTestClient(app=app) as client:
        admin = (tmp_path / "admin-token").read_text().strip()
        yield Registry(client, store, admin, settings, db_url)


@pytest_asyncio.fixture
async def registry_with(db_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    """``await registry_with(**settings)``: the registry on the local backend with these settings
    (limits lowered so a test can reach them); one per test."""
    async with contextlib.AsyncExitStack() as stack:
        async def make(**overrides: Any) -> Registry:
            settings = Settings(data_dir=tmp_path, database_url=db_url, apply_migrations=False, debug=True,
                                upload_part_bytes=5 * 2**20, **overrides)
            store = LocalBlobStore(tmp_path / "blobs")
            client = await stack.enter_async_context(AsyncTestClient(app=create_app(settings, store=store)))
            return Registry(client, store, (tmp_path / "admin-token").read_text().strip(), settings, db_url)

        yield make
