"""No transaction stays open, and no advisory lock is held, while bytes move to storage: pushes,
upload-session finalizes, base-model weights and merge jobs store their blobs first and take the
locks only to decide (DESIGN: "locks guard decisions, never transfers").

Each test wraps the store's transfer methods with a probe that looks, from a connection of its own,
at what the registry's database connections hold at that moment."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from registry_testkit import Registry, push_files, put_parts, register_base, saved_adapter, tiny_llama, writer_with_base
from safetensors.torch import save
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from registry_service.db.session import async_url, make_engine, make_sessionmaker
from registry_service.domain.merge_jobs.execute import Runtime, run_job
from registry_service.settings import WorkerSettings

#: what the registry's other connections hold: advisory locks, and transactions (open, idle or not)
HELD = """
SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),
       (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
          AND pid <> pg_backend_pid() AND xact_start IS NOT NULL)
"""


class TransferProbe:
    """Wraps transfer methods of a store; each call first records (advisory locks, open transactions)."""

    def __init__(self, db_url: str) -> None:
        self.engine = create_async_engine(async_url(db_url), poolclass=NullPool)
        self.seen: list[tuple[str, int, int]] = []

    def wrap(self, monkeypatch: pytest.MonkeyPatch, store: Any, *methods: str) -> None:
        for name in methods:
            monkeypatch.setattr(store, name, self._probed(name, getattr(store, name)))

    def _probed(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def probed(*args: Any, **kwargs: Any) -> Any:
            async with self.engine.connect() as conn:
                locks, open_tx = (await conn.execute(text(HELD))).one()
            self.seen.append((name, locks, open_tx))
            return await method(*args, **kwargs)

        return probed

    async def check(self, *expected: str) -> None:
        """Every expected method was called, and never while a lock or a transaction was held."""
        await self.engine.dispose()
        assert {name for name, _, _ in self.seen} >= set(expected), self.seen
        assert [s for s in self.seen if s[1] or s[2]] == [], self.seen


@pytest.fixture
def probe(local_registry: Registry) -> TransferProbe:
    return TransferProbe(local_registry.db_url)


async def test_a_push_stores_its_files_outside_any_transaction(local_registry: Registry, tmp_path: Path,
                                                               probe: TransferProbe,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    reg = local_registry
    writer = await writer_with_base(reg)
    probe.wrap(monkeypatch, reg.store, "put_file")
    r = await reg.client.post("/api/v1/adapters/alice/a/versions", files=push_files(saved_adapter(tmp_path)),
                              data={"base_model": "meta/tiny-llama"}, headers=reg.auth(writer))
    assert r.status_code == 201, r.text
    await probe.check("put_file")


async def test_an_upload_session_finalize_moves_its_file_outside_any_transaction(
        local_registry: Registry, tmp_path: Path, probe: TransferProbe, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = local_registry
    writer = await writer_with_base(reg)
    folder = saved_adapter(tmp_path)
    data = (folder / "adapter_model.safetensors").read_bytes()
    opened = await reg.client.post("/api/v1/adapters/alice/up/uploads", json={"size": len(data)},
                                   headers=reg.auth(writer))
    assert opened.status_code == 201, opened.text
    session = opened.json()
    parts = await put_parts(reg, session, data, writer)
    probe.wrap(monkeypatch, reg.store, "put_file", "promote_staging", "staging_sha256_and_size")
    config = ("adapter_config.json", (folder / "adapter_config.json").read_bytes(), "application/json")
    r = await reg.client.post(session["finalize_url"], files={"adapter_config.json": config},
                              data={"parts": json.dumps(parts), "sha256": hashlib.sha256(data).hexdigest(),
                                    "base_model": "meta/tiny-llama"}, headers=reg.auth(writer))
    assert r.status_code == 201, r.text
    await probe.check("promote_staging", "staging_sha256_and_size")


async def test_base_model_weights_are_stored_outside_any_transaction(local_registry: Registry,
                                                                     probe: TransferProbe,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    reg = local_registry
    writer = await reg.token("meta", "write")
    model = tiny_llama()
    await register_base(reg, "meta/weighted", model, writer)
    data = save({k: v.detach().clone() for k, v in model.state_dict().items()}, metadata={"format": "pt"})
    probe.wrap(monkeypatch, reg.store, "put_file")
    r = await reg.client.post("/api/v1/base-models/meta/weighted/files", headers=reg.auth(writer),
                              files=[("files", ("model.safetensors", io.BytesIO(data), "application/octet-stream"))])
    assert r.status_code in (200, 201), r.text
    await probe.check("put_file")


async def test_a_merge_job_stores_its_result_before_it_locks_the_job(local_registry: Registry, tmp_path: Path,
                                                                     probe: TransferProbe,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    reg = local_registry
    writer = await writer_with_base(reg)
    for name, seed in (("a", 1), ("b", 2)):
        r = await reg.client.post(f"/api/v1/adapters/alice/{name}/versions", headers=reg.auth(writer),
                                  files=push_files(saved_adapter(tmp_path, seed=seed)),
                                  data={"base_model": "meta/tiny-llama"})
        assert r.status_code == 201, r.text
    r = await reg.client.post("/api/v1/merge-jobs", headers=reg.auth(writer), json={
        "inputs": [{"ref": "alice/a"}, {"ref": "alice/b"}], "output": {"adapter": "alice/merged"}})
    assert r.status_code in (200, 201, 202), r.text
    job_id = uuid.UUID(r.json()["id"])
    engine = make_engine(reg.db_url, pool_size=2)
    try:
        rt = Runtime(make_sessionmaker(engine), reg.store, reg.settings,
                     WorkerSettings(progress_interval_s=60.0, scratch_dir=tmp_path))
        probe.wrap(monkeypatch, reg.store, "put_file")
        await run_job(rt, job_id, attempt=1, last_attempt=True)
    finally:
        await engine.dispose()
    job = (await reg.client.get(f"/api/v1/merge-jobs/{job_id}", headers=reg.auth(writer))).json()
    assert job["state"] == "succeeded", job
    await probe.check("put_file")
