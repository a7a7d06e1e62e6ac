"""Issue 19: a merge job reloads what it is about to publish and checks it on probe inputs
(:mod:`sdk.merging.verify`). The check is recorded in ``merge_recipe.json``, the version's JSON and the
job's JSON; a result that fails it fails the job, naming the module, and publishes nothing (failure
injection: the combine step or the merge into the base weights corrupts one module)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from registry_testkit import Registry, tiny_llama
from safetensors.torch import load_file, save, save_file
from test_merge_limits import job, run, setup, submit

from registry_service.domain.merge_jobs import execute

BAD_MODULE = "model.layers.1.self_attn.v_proj"


async def _recipe(reg: Registry, ref: str) -> dict[str, Any]:
    r = await reg.client.get(f"/api/v1/adapters/alice/merged/versions/{ref}/files/merge_recipe.json",
                             params={"stream": "1"})
    assert r.status_code == 200, r.text
    return json.loads(r.content)


async def test_exact_and_approximate_merges_record_their_check(registry_with, tmp_path: Path) -> None:
    reg = await registry_with()
    alice = await setup(reg, tmp_path)
    done = await run(reg, (await submit(reg, alice, job(combination_type="cat"))).json()["id"], tmp_path)
    assert done["state"] == "succeeded", done
    check = done["verification"]
    assert check["combination"] == "cat" and check["kind"] == "exact" and check["tolerance"] <= 1e-4
    assert len(check["modules"]) == 4 and check["max_relative_error"] < 1e-6
    version = (await reg.client.get("/api/v1/adapters/alice/merged/versions/1")).json()
    assert version["merge_check"] == check
    assert (await _recipe(reg, "1"))["verification"] == check
    done = await run(reg, (await submit(reg, alice, job(combination_type="svd", svd_rank=2))).json()["id"], tmp_path)
    assert done["state"] == "succeeded", done
    approx = (await reg.client.get("/api/v1/adapters/alice/merged/versions/2")).json()["merge_check"]
    assert approx["kind"] == "approximate" and approx["tolerance"] is None
    assert 0.0 < approx["max_relative_error"] < 1.0 and set(approx["modules"]) == set(check["modules"])
    page = await reg.client.get("/adapters/alice/merged/versions/2")  # the version page shows the check
    assert page.status_code == 200 and "Merge check" in page.text and "approximate" in page.text


@pytest.mark.parametrize("combination_type", ["cat", "linear"])
async def test_a_corrupted_module_fails_the_job_and_publishes_nothing(registry_with, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      combination_type: str) -> None:
    reg = await registry_with()
    alice = await setup(reg, tmp_path)
    real = execute._combine

    def corrupt(*args: Any, **kwargs: Any) -> Any:
        state, config = real(*args, **kwargs)
        key = next(k for k in state if BAD_MODULE in k and "lora_B" in k)
        state[key] = state[key] * 1.05
        return state, config

    monkeypatch.setattr(execute, "_combine", corrupt)
    done = await run(reg, (await submit(reg, alice, job(combination_type=combination_type))).json()["id"], tmp_path)
    assert done["state"] == "failed", done
    assert "failed its check on probe inputs, so nothing was published" in done["error"]
    assert f"module '{BAD_MODULE}'" in done["error"]
    assert (await reg.client.get("/api/v1/adapters/alice/merged")).status_code == 404
    assert done["verification"] is None


async def _base_with_weights(reg: Registry) -> None:
    data = save({k: v.detach().clone() for k, v in tiny_llama().state_dict().items()}, metadata={"format": "pt"})
    r = await reg.client.post("/api/v1/base-models/meta/llama/files", headers=reg.auth(reg.admin),
                              files=[("files", ("model.safetensors", io.BytesIO(data), "application/octet-stream"))])
    assert r.status_code in (200, 201), r.text


async def test_a_merge_into_base_is_checked_against_w_plus_delta(registry_with, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    reg = await registry_with()
    alice = await setup(reg, tmp_path)
    await _base_with_weights(reg)
    body = {"inputs": [{"ref": "alice/a", "weight": 0.8}, {"ref": "alice/b", "weight": 0.3}],
            "output": {"model": "alice/merged-model"}, "combination_type": "cat"}
    done = await run(reg, (await submit(reg, alice, body)).json()["id"], tmp_path)
    assert done["state"] == "succeeded", done
    into = done["verification"]["into_base"]
    assert into["kind"] == "into-base" and len(into["modules"]) == 4 and into["max_relative_error"] < 1e-5
    assert done["verification"]["combination"]["kind"] == "exact"

    import sdk.merge_files

    real = sdk.merge_files.merge_adapter_into_base

    def corrupt(base: Any, adapter: Any, out: Path, **kw: Any) -> Any:
        report = real(base, adapter, out, **kw)
        path = Path(out) / "model.safetensors"
        tensors = load_file(path)
        tensors[f"{BAD_MODULE}.weight"][0, 0] += 1.0
        save_file(tensors, path, metadata={"format": "pt"})
        return report

    monkeypatch.setattr(sdk.merge_files, "merge_adapter_into_base", corrupt)
    body["output"] = {"model": "alice/merged-model-2"}
    done = await run(reg, (await submit(reg, alice, body)).json()["id"], tmp_path)
    assert done["state"] == "failed", done
    assert "W + ΔW" in done["error"] and f"{BAD_MODULE}.weight" in done["error"]
    assert (await reg.client.get("/api/v1/base-models/alice/merged-model-2")).status_code == 404
    assert torch.__version__  # the corrupted file never became a blob of a published model
