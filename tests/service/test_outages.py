"""Outages of PostgreSQL and of blob storage: 503 (with ``Retry-After``) or 502 problem details, never
a bare 500; the service recovers by itself; a push cut off anywhere leaves no version and no blob
beyond what the README documents, and its retry succeeds.

PostgreSQL here is a dedicated embedded server (this module's ``pg_server``), stopped and started
again by the tests; the S3 outage runs against a dedicated SeaweedFS, killed and restarted on the
same ports. A failed COMMIT is injected through SQLAlchemy's session events.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import pytest_asyncio
from botocore.config import Config
from botocore.exceptions import ClientError
from litestar.testing import AsyncTestClient
from registry_testkit import (
    Registry,
    embedded_pg,
    push_files,
    put_parts,
    saved_adapter,
    writer_with_base,
)
from s3_fixtures import SeaweedProcess
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from registry_service.app import create_app
from registry_service.db.models import AdapterVersion
from registry_service.db.session import async_url
from registry_service.domain import blob_commits
from registry_service.settings import Settings
from registry_service.storage import S3BlobStore, blob_key

PUSH = "/api/v1/adapters/{}/versions"


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Any]:
    """A PostgreSQL of this module's own (the tests stop it), with the migrated template database."""
    with embedded_pg() as server:
        yield server


def stop_pg(server: Any) -> None:
    """Stop PostgreSQL (a fast shutdown: open connections are cut)."""
    server.stop()


def start_pg(server: Any) -> None:
    """Start the stopped PostgreSQL again, on the same socket."""
    with type(server)._lock:  # pgserver's inter-process lock, which its own start() holds for this call
        server.ensure_postgres_running()


async def query(reg: Registry, sql: str, **params: Any) -> list[Any]:
    """The first column of ``sql``'s rows, read on a connection of the test's own."""
    engine = create_async_engine(async_url(reg.db_url))
    try:
        async with engine.connect() as conn:
            return [r[0] for r in await conn.execute(text(sql), params)]
    finally:
        await engine.dispose()


async def referenced_keys(reg: Registry) -> set[str]:
    """Every storage key a file row (adapter version or base model) records."""
    return set(await query(reg, "SELECT storage_key FROM file UNION SELECT storage_key FROM base_model_file"))


async def version_numbers(reg: Registry, name: str) -> list[int]:
    """The version numbers of adapter ``name`` in the database."""
    return await query(reg, "SELECT v.version FROM adapter_version v JOIN adapter a ON a.id = v.adapter_id "
                            "WHERE a.namespace || '/' || a.name = :n ORDER BY v.version", n=name)


def assert_unavailable(r: Any, kind: str = "problem") -> None:
    """A 503 that says when to retry, naming its request id: a problem detail, an HTML ``page``, or a
    ``hub`` error (``{"error": ...}`` with ``X-Error-Message``, as ``huggingface_hub`` reads it)."""
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) > 0
    request_id = r.headers["x-request-id"]
    assert "Traceback" not in r.text and "asyncpg" not in r.text and "botocore" not in r.text
    if kind == "problem":
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert body["status"] == 503 and body["request_id"] == request_id
    elif kind == "page":
        assert r.headers["content-type"].startswith("text/html")
        assert request_id in r.text
    else:
        assert r.json()["error"] and "unreachable" in r.headers["x-error-message"]


async def pushed(reg: Registry, token: str, name: str, folder: Path) -> Any:
    return await reg.client.post(PUSH.format(name), files=push_files(folder), data={"base_model": "meta/tiny-llama"},
                                 headers=reg.auth(token))


# --- PostgreSQL down --------------------------------------------------------------------------------


async def test_while_the_database_is_down_everything_answers_503_and_heals_by_itself(
        pg_server: Any, local_registry: Registry, tmp_path: Path) -> None:
    reg = local_registry
    writer = await writer_with_base(reg)
    assert (await pushed(reg, writer, "alice/up", saved_adapter(tmp_path, seed=1))).status_code == 201
    requests = [("/api/v1/health", {}, "problem"), ("/api/v1/adapters/alice/up", {}, "problem"),
                ("/api/v1/adapters/alice/up/versions/1/files/adapter_model.safetensors", {}, "problem"),
                ("/api/v1/adapters", {}, "problem"), ("/api/models/alice/up", {}, "hub"),
                ("/alice/up/resolve/main/adapter_config.json", {}, "hub"),
                ("/", {"Accept": "text/html"}, "page"), ("/adapters/alice/up", {"Accept": "text/html"}, "page")]
    stop_pg(pg_server)
    try:
        for path, headers, kind in requests:
            assert_unavailable(await reg.client.get(path, headers=headers), kind)
        assert_unavailable(await pushed(reg, writer, "alice/up", saved_adapter(tmp_path, seed=2)))
    finally:
        start_pg(pg_server)
    # the same app, not restarted: its pool replaces the dead connections
    for path, headers, _kind in requests:
        r = await reg.client.get(path, headers=headers)
        assert r.status_code == 200, (path, r.text)
    assert (await pushed(reg, writer, "alice/up", saved_adapter(tmp_path, seed=2))).status_code == 201
    assert await version_numbers(reg, "alice/up") == [1, 2]


@pytest.mark.parametrize("when", ["after storing", "holding the lock"])
async def test_database_lost_in_the_middle_of_a_push(pg_server: Any, local_registry: Registry, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """PostgreSQL stops after the push stored its blobs (before its transaction begins, or inside it,
    once it holds a blob's lock): 503, no version; the blobs stay (the README says so) and the retry
    uses them, after which every stored blob is referenced."""
    reg = local_registry
    writer = await writer_with_base(reg)
    folder = saved_adapter(tmp_path, seed=3)
    if when == "after storing":
        real_put, puts = reg.store.put_file, []

        async def put_then_stop_db(source: Any) -> Any:
            info = await real_put(source)
            puts.append(info)
            if len(puts) == 2:  # the config and the weights are stored; the rows are not written yet
                stop_pg(pg_server)
            return info

        monkeypatch.setattr(reg.store, "put_file", put_then_stop_db)
    else:
        real_lock, locks = blob_commits.lock_blob, []

        async def lock_then_stop_db(db: Any, sha256: str, **how: Any) -> None:
            await real_lock(db, sha256, **how)
            locks.append(sha256)
            if len(locks) == 1:  # the transaction's next statement meets a closed connection
                stop_pg(pg_server)

        monkeypatch.setattr(blob_commits, "lock_blob", lock_then_stop_db)
    try:
        assert_unavailable(await pushed(reg, writer, "alice/cut", folder))
    finally:
        start_pg(pg_server)
    monkeypatch.undo()
    assert await version_numbers(reg, "alice/cut") == []
    blobs = set(await reg.store.list_keys())
    pushed_keys = {blob_key(_sha(folder / n)) for n in ("adapter_config.json", "adapter_model.safetensors")}
    assert blobs - await referenced_keys(reg) <= pushed_keys  # at most the push's own, documented leftovers

    r = await pushed(reg, writer, "alice/cut", folder)
    assert r.status_code == 201, r.text
    assert await version_numbers(reg, "alice/cut") == [1]
    assert set(await reg.store.list_keys()) == await referenced_keys(reg)
    got = await reg.client.get("/api/v1/adapters/alice/cut/versions/1/files/adapter_model.safetensors")
    assert got.content == (folder / "adapter_model.safetensors").read_bytes()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- a COMMIT whose outcome is unknown ------------------------------------------------------------


@pytest.fixture
def commit_fault() -> Iterator[Any]:
    """``commit_fault(when)`` arms a one-time COMMIT failure; the listener is removed afterwards."""
    armed: list[tuple[str, Any]] = []

    def arm(when: str) -> list[int]:
        failures: list[int] = []

        def fail(session: Session) -> None:
            if not failures and any(isinstance(o, AdapterVersion) for o in session.identity_map.values()):
                failures.append(1)
                raise sa_exc.InterfaceError("COMMIT", None, ConnectionResetError("connection lost"),
                                            connection_invalidated=True)

        event.listen(Session, when, fail)
        armed.append((when, fail))
        return failures

    yield arm
    for when, fn in armed:
        event.remove(Session, when, fn)


@pytest.mark.parametrize("when", ["after_commit", "before_commit"])
async def test_a_commit_whose_outcome_is_unknown_deletes_no_blob(local_registry: Registry, tmp_path: Path,
                                                                 commit_fault: Any, when: str) -> None:
    """``after_commit``: the version was committed but the answer lost; ``before_commit``: it was not.
    Either way the push cannot know, so it keeps its blobs; the retry succeeds and leaves no orphan."""
    reg = local_registry
    writer = await writer_with_base(reg)
    folder = saved_adapter(tmp_path, seed=4)
    committed = when == "after_commit"
    failures = commit_fault(when)
    r = await pushed(reg, writer, "alice/unsure", folder)
    assert failures == [1]
    assert await version_numbers(reg, "alice/unsure") == ([1] if committed else [])
    assert blob_key(_sha(folder / "adapter_model.safetensors")) in await reg.store.list_keys()
    if committed:  # its files must still be there
        got = await reg.client.get("/api/v1/adapters/alice/unsure/versions/1/files/adapter_model.safetensors")
        assert got.status_code == 200 and got.content == (folder / "adapter_model.safetensors").read_bytes()
    assert_unavailable(r)
    assert "may or may not" in r.json()["detail"]
    r = await pushed(reg, writer, "alice/unsure", folder)
    assert r.status_code == 201, r.text
    assert await version_numbers(reg, "alice/unsure") == ([1, 2] if committed else [1])
    assert set(await reg.store.list_keys()) == await referenced_keys(reg)


async def test_s3_finalize_whose_commit_answer_is_lost_keeps_the_uploaded_blob(
        s3_registry: Registry, tmp_path: Path, commit_fault: Any) -> None:
    """On S3 an upload session's file stays under its own key, which the version records: a COMMIT
    that fails after committing must not delete it."""
    reg = s3_registry
    writer = await writer_with_base(reg)
    folder = saved_adapter(tmp_path, seed=6)
    data = (folder / "adapter_model.safetensors").read_bytes()
    opened = await reg.client.post("/api/v1/adapters/alice/big/uploads", json={"size": len(data), "sha256": _sha(
        folder / "adapter_model.safetensors")}, headers=reg.auth(writer))
    assert opened.status_code == 201, opened.text
    session = opened.json()
    assert session["direct"]
    parts = await put_parts(reg, session, data, writer)
    failures = commit_fault("after_commit")
    config = ("adapter_config.json", (folder / "adapter_config.json").read_bytes(), "application/json")
    r = await reg.client.post(session["finalize_url"], files={"adapter_config.json": config},
                              data={"parts": json.dumps(parts), "base_model": "meta/tiny-llama"},
                              headers=reg.auth(writer))
    assert failures == [1]
    assert await version_numbers(reg, "alice/big") == [1]
    got = await reg.client.get("/api/v1/adapters/alice/big/versions/1/files/adapter_model.safetensors?stream=1")
    if got.status_code == 302:
        async with httpx.AsyncClient() as direct:
            got = await direct.get(got.headers["location"])
    assert got.status_code == 200 and got.content == data
    assert_unavailable(r)


# --- S3 down ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedProcess]:
    """A SeaweedFS of this module's own (the tests kill it)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "registry-test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "registry-test-secret")
        server = SeaweedProcess(tmp_path_factory.mktemp("outage-weed"))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest_asyncio.fixture
async def weed_registry(weed: SeaweedProcess, db_url: str, tmp_path: Path) -> AsyncIterator[Registry]:
    """The registry on the dedicated SeaweedFS, streaming downloads, with a client that does not retry
    (so an outage shows at once)."""
    bucket = f"outage-{uuid.uuid4().hex[:8]}"
    client = boto3.session.Session().client(
        "s3", endpoint_url=weed.endpoint_url, region_name="us-east-1", aws_access_key_id="registry-test",
        aws_secret_access_key="registry-test-secret",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                      retries={"max_attempts": 1, "mode": "standard"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))
    store = S3BlobStore(bucket, client=client)
    settings = Settings(data_dir=tmp_path, database_url=db_url, s3_bucket=bucket, s3_endpoint=weed.endpoint_url,
                        apply_migrations=False, redirect_downloads=False, upload_part_bytes=5 * 2**20)
    async with AsyncTestClient(app=create_app(settings, store=store)) as http:
        yield Registry(http, store, (tmp_path / "admin-token").read_text().strip(), settings, db_url)


async def test_storage_down_in_the_middle_of_a_push_is_503_and_the_retry_works(
        weed: SeaweedProcess, weed_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = weed_registry
    writer = await writer_with_base(reg)
    first = saved_adapter(tmp_path, seed=7, lora_alpha=16)  # its config differs too: two new blobs below
    assert (await pushed(reg, writer, "alice/s3", first)).status_code == 201
    folder = saved_adapter(tmp_path, seed=8)
    real_put = reg.store.put_file
    calls = 0

    async def stop_storage_at_the_second_put(source: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # one blob of this push is stored, the next one meets a dead server
            weed.stop()
        return await real_put(source)

    monkeypatch.setattr(reg.store, "put_file", stop_storage_at_the_second_put)
    try:
        assert_unavailable(await pushed(reg, writer, "alice/s3", folder))
        assert calls == 2
        download = await reg.client.get("/api/v1/adapters/alice/s3/versions/1/files/adapter_model.safetensors")
        assert_unavailable(download)
        assert (await reg.client.get("/api/v1/adapters/alice/s3")).status_code == 200  # metadata needs no storage
    finally:
        weed.restart()
    monkeypatch.undo()
    assert await version_numbers(reg, "alice/s3") == [1]
    # the blob stored before the outage could not be deleted while storage was down (documented)
    leftovers = set(await reg.store.list_keys()) - await referenced_keys(reg)
    assert leftovers <= {blob_key(_sha(folder / n)) for n in ("adapter_config.json", "adapter_model.safetensors")}
    r = await pushed(reg, writer, "alice/s3", folder)
    assert r.status_code == 201, r.text
    assert await version_numbers(reg, "alice/s3") == [1, 2]
    got = await reg.client.get("/api/v1/adapters/alice/s3/versions/2/files/adapter_model.safetensors")
    assert got.content == (folder / "adapter_model.safetensors").read_bytes()
    assert set(await reg.store.list_keys()) == await referenced_keys(reg)  # the retry used the leftover


@pytest.mark.parametrize(("status", "code", "expected"), [(500, "InternalError", 502), (503, "SlowDown", 503)])
async def test_storage_that_answers_with_an_error_is_502_or_503_when_busy(
        weed_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, code: str,
        expected: int) -> None:
    reg = weed_registry
    writer = await writer_with_base(reg)

    def refuse(**kwargs: Any) -> None:
        answer: Any = {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": status}}
        raise ClientError(answer, "PutObject")

    monkeypatch.setattr(reg.store.client, "put_object", refuse)
    folder = saved_adapter(tmp_path, seed=9)
    r = await pushed(reg, writer, "alice/refused", folder)
    assert r.status_code == expected, r.text
    body = r.json()
    assert body["status"] == expected and body["request_id"] == r.headers["x-request-id"]
    assert code in body["detail"] and reg.store.bucket not in body["detail"]
    assert ("retry-after" in r.headers) == (expected == 503)
    assert await version_numbers(reg, "alice/refused") == [] and await reg.store.list_keys() == []
    monkeypatch.undo()
    assert (await pushed(reg, writer, "alice/refused", folder)).status_code == 201
