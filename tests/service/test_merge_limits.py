"""Issue 14: merge jobs are bounded. At submit: weights finite and within ``max_merge_weight``,
``svd_rank`` within the inputs' ranks, the memory estimate within ``max_merge_memory_bytes``, the
output's description and tags like a push's. While running: a result with NaN/Inf is not
published, and a job past the worker's ``job_timeout_s`` fails and publishes nothing.

Jobs are run in this process with the worker's own runner (``run_job``), no queue needed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import torch
from registry_testkit import Registry, register_base, saved_adapter, tiny_llama
from safetensors.torch import load_file, save

from registry_service.db.session import make_engine, make_sessionmaker
from registry_service.domain.merge_jobs.execute import Runtime, run_job
from registry_service.settings import WorkerSettings

BASE = "meta/llama"


async def setup(reg: Registry, tmp: Path, *, scale: float = 1.0, half: bool = False) -> str:
    """A writer of 'alice' with two r=4 LoRAs alice/a and alice/b pushed (values × ``scale``, fp16 if ``half``)."""
    alice = await reg.token("alice", "write")
    await register_base(reg, BASE, tiny_llama(), reg.admin)
    for seed, name in ((1, "a"), (2, "b")):
        folder = saved_adapter(tmp, seed=seed)
        tensors = {k: (v * scale).to(torch.float16 if half else v.dtype)
                   for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}
        r = await reg.client.post(f"/api/v1/adapters/alice/{name}/versions", headers=reg.auth(alice),
                                  data={"base_model": BASE},
                                  files={"adapter_config.json": ("adapter_config.json",
                                                                 (folder / "adapter_config.json").read_bytes()),
                                         "adapter_model.safetensors": ("adapter_model.safetensors", save(tensors))})
        assert r.status_code == 201, r.text
    return alice


def job(weights: tuple[float, float] = (0.5, 0.5), **kw: Any) -> dict[str, Any]:
    output = {"adapter": "alice/merged"} | kw.pop("output", {})
    return {"inputs": [{"ref": "alice/a", "weight": weights[0]}, {"ref": "alice/b", "weight": weights[1]}],
            "output": output} | kw


async def submit(reg: Registry, token: str, body: dict[str, Any]) -> Any:
    return await reg.client.post("/api/v1/merge-jobs", json=body, headers=reg.auth(token))


async def test_submitted_jobs_are_bounded(registry_with, tmp_path: Path) -> None:
    """Weights finite and within max_merge_weight (main accepted 1e308 and published 896/896 non-finite
    values), svd_rank within the inputs' ranks, the output's description and tags like a push's."""
    reg = await registry_with(max_merge_weight=10.0)
    alice = await setup(reg, tmp_path)
    for weights in [(1e308, 0.5), (0.5, -10.5)]:
        r = await submit(reg, alice, job(weights))
        assert r.status_code == 422, r.text
        problem = r.json()["problems"][0]
        assert "max_merge_weight" in problem["message"] and problem["expected"] == "-10 <= weight <= 10"
    assert (await submit(reg, alice, job((10.0, -10.0)))).status_code == 202
    # two rank-4 inputs: their weighted sum has rank 8 at most
    r = await submit(reg, alice, job(combination_type="svd", svd_rank=9))
    assert r.status_code == 422, r.text
    assert r.json()["problems"][0]["message"] == ("svd_rank 9 is more than the inputs can have: their ranks add up "
                                                  "to 8")
    assert (await submit(reg, alice, job(combination_type="svd", svd_rank=8))).status_code == 202
    huge = await submit(reg, alice, job(combination_type="ties_svd", density=0.5, svd_rank=2**40))
    assert huge.status_code in (400, 422)
    r = await submit(reg, alice, job(output={"description": "x" * 5000}, tags=[f"t{i}" for i in range(40)]))
    assert r.status_code == 422, r.text
    messages = [p["message"] for p in r.json()["problems"]]
    assert any("description is 5000 characters" in m for m in messages)
    assert any("40 tags" in m for m in messages)


async def test_a_job_estimated_past_the_memory_limit_is_refused(registry_with, tmp_path: Path) -> None:
    """The estimate (inputs × 3, plus the SVD's dense matrices) against max_merge_memory_bytes."""
    reg = await registry_with(max_merge_memory_bytes=40_000)
    alice = await setup(reg, tmp_path)
    assert (await submit(reg, alice, job(combination_type="linear"))).status_code == 202  # 3 × 2 × 4608 bytes
    r = await submit(reg, alice, job(combination_type="svd"))  # + 4 × (4 × 32 × 32 + 2 × 32²) bytes for q_proj
    assert r.status_code == 422, r.text
    problem = r.json()["problems"][0]
    assert "max_merge_memory_bytes" in problem["message"] and "limit of 40000 bytes" in problem["message"]
    assert 24576 + 40_000 > int(problem["found"].split()[0]) > 40_000


async def run(reg: Registry, job_id: str, tmp: Path, **worker: Any) -> dict[str, Any]:
    """Run the job as a worker would, then read it back."""
    engine = make_engine(reg.db_url)
    try:
        rt = Runtime(make_sessionmaker(engine), reg.store, reg.settings,
                     WorkerSettings(scratch_dir=tmp, progress_interval_s=0.05, **worker))
        await run_job(rt, uuid.UUID(job_id), attempt=1, last_attempt=True)
    finally:
        await engine.dispose()
    return (await reg.client.get(f"/api/v1/merge-jobs/{job_id}", headers=reg.auth(reg.admin))).json()


async def test_a_non_finite_result_is_not_published(registry_with, tmp_path: Path) -> None:
    """fp16 inputs with large (finite) values, weighted within bounds, overflow: the job fails and
    names a tensor; no version is published."""
    reg = await registry_with()
    alice = await setup(reg, tmp_path, scale=20_000.0, half=True)
    r = await submit(reg, alice, job((100.0, 100.0), combination_type="cat"))
    assert r.status_code == 202, r.text
    done = await run(reg, r.json()["id"], tmp_path)
    assert done["state"] == "failed", done
    assert "not finite, so nothing was published" in done["error"] and "lora_" in done["error"]
    assert (await reg.client.get("/api/v1/adapters/alice/merged")).status_code == 404


async def test_a_job_past_its_timeout_fails_and_publishes_nothing(registry_with, tmp_path: Path) -> None:
    reg = await registry_with()
    alice = await setup(reg, tmp_path)
    r = await submit(reg, alice, job())
    done = await run(reg, r.json()["id"], tmp_path, job_timeout_s=0.5, step_delay_s=0.3)
    assert done["state"] == "failed", done
    assert done["error"].startswith("timed out: the job ran longer than 0.5 s (the worker's job_timeout_s)")
    assert (await reg.client.get("/api/v1/adapters/alice/merged")).status_code == 404
    quick = await submit(reg, alice, job())
    assert (await run(reg, quick.json()["id"], tmp_path, job_timeout_s=60))["state"] == "succeeded"
    assert json.loads((await reg.client.get("/api/v1/adapters/alice/merged")).text)["name"] == "alice/merged"


async def test_a_result_past_the_namespace_quota_is_not_published(registry_with, tmp_path: Path) -> None:
    """The two inputs take ~11 kB of alice's 15 kB; the merged version (~7 kB) would pass it."""
    reg = await registry_with(namespace_max_bytes=15_000)
    alice = await setup(reg, tmp_path)
    r = await submit(reg, alice, job())
    done = await run(reg, r.json()["id"], tmp_path)
    assert done["state"] == "failed" and "namespace_max_bytes" in done["error"], done
    assert (await reg.client.get("/api/v1/adapters/alice/merged")).status_code == 404
