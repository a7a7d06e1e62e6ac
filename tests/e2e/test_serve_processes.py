"""``adapter-registry serve --workers 2`` as a real process on its embedded default: two API processes
share the port and the embedded PostgreSQL, their metrics add up, keep-alive responses are not held
back by Nagle's algorithm, logs are JSON lines when asked, and SIGTERM lets a request in flight finish
before everything (the embedded PostgreSQL last) stops."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

import sdk
from sdk.client import Client


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    data_dir: Path
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def child_pids(self) -> set[int]:
        found = set()
        for line in self.lines():
            if line.startswith("{") and "Started server process" in line:
                found.add(int(re.search(r"\[(\d+)\]", json.loads(line)["message"]).group(1)))
        return found


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("serve-workers")
    port = _free_port()
    exe = shutil.which("adapter-registry", path=str(Path(sys.executable).parent)) or "adapter-registry"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTER_REGISTRY_")}
    log = data / "serve.log"
    proc = subprocess.Popen([exe, "serve", "--workers", "2", "--port", str(port), "--data-dir", str(data),
                             "--log-format", "json"], stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    srv = Served(f"http://127.0.0.1:{port}", proc, data, log)
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, f"serve exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(srv.url + "/readyz", timeout=2).status_code == 200 and len(srv.child_pids()) == 2:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"serve never got ready:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)
    yield srv
    if proc.poll() is None:  # a test failed before the SIGTERM test: stop gracefully (PostgreSQL too)
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_two_api_processes_share_the_port_and_their_metrics_add_up(served: Served) -> None:
    pids = served.child_pids()
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    for _ in range(40):  # a new connection each time: the kernel spreads them over both processes
        assert httpx.get(served.url + "/livez", headers={"Connection": "close"}).status_code == 200
    text = httpx.get(served.url + "/metrics").text
    livez = sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name == "adapter_registry_requests_total" and s.labels.get("path") == "/livez")
    assert livez == 40  # whichever process answers the scrape reports both processes' requests


def test_keep_alive_responses_are_not_delayed(served: Served) -> None:
    """Headers and body leave in two writes; without TCP_NODELAY the body waits for the client's
    delayed ACK (~40 ms on Linux) on every request after the first of a connection."""
    with httpx.Client(base_url=served.url) as client:
        for _ in range(3):
            client.get("/livez")
        times = []
        for _ in range(30):
            start = time.perf_counter()
            assert client.get("/livez").status_code == 200
            times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.030, f"median {statistics.median(times) * 1000:.1f} ms"


def test_logs_are_json_lines_with_request_fields(served: Served) -> None:
    r = httpx.get(served.url + "/livez", headers={"X-Request-ID": "ops-probe-7"})
    assert r.headers["x-request-id"] == "ops-probe-7"
    fresh = httpx.get(served.url + "/livez").headers["x-request-id"]  # made by the service
    time.sleep(0.5)
    records = []
    for line in served.lines():
        if line.startswith("adapter-registry:") or line.startswith(("Created an admin token", "  ")):
            continue  # the start-up banner and the first admin token, printed for people
        records.append(json.loads(line))  # every log line is one JSON object
    assert records
    assert all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "uvicorn.access" and r.get("path") == "/livez"]
    assert access and access[-1]["status"] == 200 and access[-1]["method"] == "GET"
    ids = {r["request_id"] for r in access}
    assert {"ops-probe-7", fresh} <= ids  # the caller's id, or the one the service made, on the line
    assert {r["pid"] for r in records} >= served.child_pids()


def _tiny_push(tmp: Path) -> tuple[bytes, str, torch.nn.Module]:
    """A multipart push body (as httpx would send it), its content type, and the base model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=40, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()
    model = sdk.get_peft_model(base, sdk.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    model.save_pretrained(tmp)
    files = {n: (n, (tmp / n).read_bytes()) for n in ("adapter_config.json", "adapter_model.safetensors")}
    request = httpx.Request("POST", "http://x", files=files, data={"base_model": "ops/llama"})
    return request.read(), request.headers["content-type"], base


def test_sigterm_lets_a_request_in_flight_finish_then_stops_everything(served: Served, tmp_path: Path) -> None:
    admin = (served.data_dir / "admin-token").read_text().strip()
    token = httpx.post(served.url + "/api/v1/tokens", json={"namespace": "ops", "scopes": ["write"]},
                       headers={"Authorization": f"Bearer {admin}"}).json()["token"]
    body, content_type, base = _tiny_push(tmp_path)
    Client(served.url, token).register_base_model(base, "ops/llama")
    pids = served.child_pids()
    pg_pid_file = served.data_dir / "pg" / "postmaster.pid"
    assert pg_pid_file.exists()
    sent_half = threading.Event()

    def slow_body() -> Iterator[bytes]:
        half = len(body) // 2
        yield body[:half]
        sent_half.set()
        time.sleep(2.0)  # SIGTERM arrives meanwhile
        yield body[half:]

    result: dict[str, httpx.Response] = {}

    def push() -> None:
        result["r"] = httpx.post(served.url + "/api/v1/adapters/ops/slow/versions", content=slow_body(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
                                 timeout=60)

    pusher = threading.Thread(target=push)
    pusher.start()
    assert sent_half.wait(30)
    time.sleep(0.3)
    served.process.send_signal(signal.SIGTERM)
    pusher.join(60)
    assert result["r"].status_code == 201, result["r"].text  # finished although the server was stopping
    assert result["r"].json()["version"] == 1
    assert served.process.wait(timeout=60) == 0
    assert not any(_alive(p) for p in pids)
    assert not pg_pid_file.exists()  # the embedded PostgreSQL stopped with the service
    with pytest.raises(httpx.ConnectError):
        httpx.get(served.url + "/livez", timeout=2)
