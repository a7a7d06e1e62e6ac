"""Probes (``/livez``, ``/readyz``) and Prometheus metrics (``/metrics``) of the API, in process, on both
storage backends. The metrics are process-wide, so the checks compare before and after."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from registry_testkit import Registry, push_files, register_base, saved_adapter, sql, tiny_llama

from registry_service.db.session import head_revision, make_engine

PUSH_PATH = "/api/v1/adapters/{ns}/{name}/versions"


async def scrape(reg: Registry) -> list[tuple[str, dict[str, str], float]]:
    r = await reg.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(r.text) for s in fam.samples]


def total(samples: list[tuple[str, dict[str, str], float]], name: str,
          where: Callable[[dict[str, str]], bool] = lambda labels: True) -> float:
    return sum(v for n, labels, v in samples if n == name and where(labels))


async def test_livez_and_readyz_when_all_is_well(registry: Registry) -> None:
    r = await registry.client.get("/livez")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = await registry.client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True, "migration": head_revision()}
    assert body["checks"]["storage"]["ok"] is True
    assert (await registry.client.get("/api/v1/health")).json()["status"] == "ok"  # unchanged


async def test_readyz_fails_when_the_database_is_behind_the_newest_migration(registry: Registry) -> None:
    await sql(registry, "UPDATE alembic_version SET version_num = '0003'")
    r = await registry.client.get("/readyz")
    assert r.status_code == 503
    database = r.json()["checks"]["database"]
    assert database["ok"] is False
    assert "migration 0003" in database["error"] and "adapter-registry migrate" in database["error"]
    assert (await registry.client.get("/livez")).status_code == 200  # alive all the same


async def test_readyz_fails_when_the_database_is_unreachable(registry: Registry) -> None:
    state = registry.client.app.state
    good = state.engine
    state.engine = make_engine("postgresql://nobody@127.0.0.1:1/none")  # failure injection: a dead server
    try:
        r = await registry.client.get("/readyz")
    finally:
        await state.engine.dispose()
        state.engine = good
    assert r.status_code == 503
    assert r.json()["checks"]["database"]["ok"] is False
    assert r.json()["checks"]["storage"]["ok"] is True


async def test_readyz_fails_when_storage_is_gone(registry: Registry, request) -> None:  # type: ignore[no-untyped-def]
    if registry.settings.uses_s3:
        request.getfixturevalue("s3_server").delete_bucket(registry.store.bucket)
    else:
        shutil.rmtree(registry.store.root / "blobs")
    r = await registry.client.get("/readyz")
    assert r.status_code == 503
    storage = r.json()["checks"]["storage"]
    assert storage["ok"] is False and storage["error"]
    assert r.json()["checks"]["database"]["ok"] is True


async def test_metrics_count_requests_by_route_and_status_with_latency(registry: Registry, tmp_path: Path) -> None:
    writer = await registry.token("alice", "write")
    await register_base(registry, "meta/llama", tiny_llama(), registry.admin)
    folder = saved_adapter(tmp_path)
    size = (folder / "adapter_model.safetensors").stat().st_size

    def pushes(status: str) -> Callable[[dict[str, str]], bool]:
        return lambda lb: lb.get("path") == PUSH_PATH and lb.get("method") == "POST" and lb.get("status_code") == status

    before = await scrape(registry)
    r = await registry.client.post("/api/v1/adapters/alice/chat/versions", files=push_files(folder),
                                   data={"base_model": "meta/llama"}, headers=registry.auth(writer))
    assert r.status_code == 201, r.text
    r = await registry.client.post("/api/v1/adapters/alice/chat/versions", files=push_files(folder),
                                   data={"base_model": "meta/nope"}, headers=registry.auth(writer))
    assert 400 <= r.status_code < 500
    bad_status = str(r.status_code)
    after = await scrape(registry)

    def delta(name: str, where: Callable[[dict[str, str]], bool]) -> float:
        return total(after, name, where) - total(before, name, where)

    assert delta("adapter_registry_requests_total", pushes("201")) == 1
    assert delta("adapter_registry_requests_total", pushes(bad_status)) == 1
    assert delta("adapter_registry_request_duration_seconds_count", pushes("201")) == 1
    assert delta("adapter_registry_request_duration_seconds_sum", pushes("201")) > 0
    inf = delta("adapter_registry_request_duration_seconds_bucket", lambda lb: pushes("201")(lb) and lb["le"] == "+Inf")
    assert inf == 1
    # both pushes are over: the in-progress gauge went up and back down (labelled as Litestar labels it)
    progress = [v for n, lb, v in after if n == "adapter_registry_requests_in_progress"
                and lb.get("path") == PUSH_PATH and lb.get("method") == "POST"]
    assert progress == [0]
    assert total(after, "adapter_registry_requests_in_progress", lambda lb: lb.get("path") == "/metrics") == 1
    received = delta("adapter_registry_http_received_bytes_total", lambda lb: lb["path"] == PUSH_PATH)
    assert received >= 2 * size  # both pushes' bodies, each carrying the weights


async def test_metrics_count_bytes_sent_and_the_database_state(registry: Registry, tmp_path: Path) -> None:
    writer = await registry.token("alice", "write")
    await register_base(registry, "meta/llama", tiny_llama(), registry.admin)
    folders = [saved_adapter(tmp_path, seed=s) for s in (1, 2)]
    for i, folder in enumerate(folders):
        r = await registry.client.post(f"/api/v1/adapters/alice/a{i}/versions", files=push_files(folder),
                                       data={"base_model": "meta/llama"}, headers=registry.auth(writer))
        assert r.status_code == 201, r.text
    weights = folders[0] / "adapter_model.safetensors"
    before = await scrape(registry)
    assert total(before, "adapter_registry_database_up") == 1
    assert total(before, "adapter_registry_upload_sessions_open") == 0
    assert total(before, "adapter_registry_merge_jobs", lambda lb: lb["state"] == "queued") == 0

    r = await registry.client.get("/api/v1/adapters/alice/a0/versions/1/files/adapter_model.safetensors",
                                  params={"stream": "1"}, headers=registry.auth(writer))
    assert r.status_code == 200 and r.content == weights.read_bytes()
    body = {"size": weights.stat().st_size, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    r = await registry.client.post("/api/v1/adapters/alice/big/uploads", json=body, headers=registry.auth(writer))
    assert r.status_code == 201, r.text
    job = {"inputs": [{"ref": "alice/a0@1"}, {"ref": "alice/a1@1"}], "output": {"adapter": "alice/merged"}}
    r = await registry.client.post("/api/v1/merge-jobs", json=job, headers=registry.auth(writer))
    assert r.status_code == 202, r.text  # no worker runs here: it stays queued
    after = await scrape(registry)

    sent = total(after, "adapter_registry_http_sent_bytes_total", lambda lb: "/files/" in lb["path"]) - \
        total(before, "adapter_registry_http_sent_bytes_total", lambda lb: "/files/" in lb["path"])
    assert sent == weights.stat().st_size
    assert total(after, "adapter_registry_upload_sessions_open", lambda lb: lb["kind"] == "adapter") == 1
    assert total(after, "adapter_registry_merge_jobs", lambda lb: lb["state"] == "queued") == 1
    assert total(after, "adapter_registry_merge_jobs", lambda lb: lb["state"] == "running") == 0


async def test_metrics_count_bytes_that_go_straight_to_s3(s3_registry: Registry, tmp_path: Path) -> None:
    reg = s3_registry
    writer = await reg.token("alice", "write")
    await register_base(reg, "meta/llama", tiny_llama(), reg.admin)
    folder = saved_adapter(tmp_path)
    data = (folder / "adapter_model.safetensors").read_bytes()
    direct = lambda direction: lambda lb: lb["direction"] == direction  # noqa: E731
    before = await scrape(reg)

    body = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    r = await reg.client.post("/api/v1/adapters/alice/big/uploads", json=body, headers=reg.auth(writer))
    session = r.json()
    assert session["direct"], "S3 sessions are presigned"
    import httpx

    async with httpx.AsyncClient() as s3:
        put = await s3.put(session["parts"][0]["url"], content=data)
    assert put.status_code == 200
    config = (folder / "adapter_config.json").read_bytes()
    r = await reg.client.post(session["finalize_url"], headers=reg.auth(writer),
                              files={"adapter_config.json": ("adapter_config.json", io.BytesIO(config))},
                              data={"parts": json.dumps([[1, put.headers["etag"]]]), "base_model": "meta/llama"})
    assert r.status_code == 201, r.text
    r = await reg.client.get("/api/v1/adapters/alice/big/versions/1/files/adapter_model.safetensors",
                             headers=reg.auth(writer), follow_redirects=False)
    assert r.status_code == 302
    after = await scrape(reg)
    name = "adapter_registry_s3_direct_bytes_total"
    assert total(after, name, direct("upload")) - total(before, name, direct("upload")) == len(data)
    assert total(after, name, direct("download")) - total(before, name, direct("download")) == len(data)
    assert total(after, "adapter_registry_upload_sessions_open") == 0
