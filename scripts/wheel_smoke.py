"""The installed wheel, end to end (run by scripts/check_wheel.sh with the clean venv's Python, from a
directory outside the checkout): ``adapter-registry serve`` on its embedded default, a base model
registered, two adapters pushed and one pulled back byte for byte, and a merge job run by an
``adapter-registry worker``. Exits non-zero with a message at the first thing that does not work.

Usage: python wheel_smoke.py WORK_DIR
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

import registry_service
import sdk
from sdk.client import Client, MergeJobFailed


def fail(message: str, *logs: Path) -> None:
    for log in logs:
        if log.exists():
            print(f"--- {log} (last lines)\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
    raise SystemExit(f"wheel smoke test: {message}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def saved_lora(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                            init_lora_weights=False))
    model.save_pretrained(folder)
    return folder


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(work: Path) -> None:
    bin_dir = Path(sys.executable).parent
    for module in (sdk, registry_service):  # the wheel's code, not a checkout's
        if "site-packages" not in str(module.__file__):
            fail(f"{module.__name__} comes from {module.__file__}, not from the installed wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADAPTER_REGISTRY_", "PYTHONPATH"))}
    data = work / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log, worker_log = work / "serve.log", work / "worker.log"
    server = subprocess.Popen([str(bin_dir / "adapter-registry"), "serve", "--port", str(port), "--data-dir",
                               str(data)], stdout=open(server_log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=work)
    worker = None
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                fail(f"adapter-registry serve exited with {server.returncode}", server_log)
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                fail("the server never became ready", server_log)
            time.sleep(0.5)
        print(f"wheel smoke test: serving from the wheel at {url}")
        admin = (data / "admin-token").read_text().strip()
        token = httpx.post(f"{url}/api/v1/tokens", json={"namespace": "smoke", "scopes": ["write"]},
                           headers={"Authorization": f"Bearer {admin}"}).json()["token"]
        client = Client(url, token, cache_dir=work / "cache")
        client.register_base_model(tiny_llama(), "smoke/llama", weights=True)
        a, b = saved_lora(work / "a", 1), saved_lora(work / "b", 2)
        pushed = client.push(a, "smoke/chat", base_model="smoke/llama")
        client.push(b, "smoke/code", base_model="smoke/llama")
        pulled = client.pull("smoke/chat", version=pushed.version)
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            if digest(pulled / name) != digest(a / name):
                fail(f"pulled {name} differs from the pushed one")
        print(f"wheel smoke test: pushed and pulled smoke/chat@{pushed.version}")
        worker = subprocess.Popen([str(bin_dir / "adapter-registry"), "worker", "--data-dir", str(data)],
                                  stdout=open(worker_log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=work)
        try:
            job = client.merge(["smoke/chat@1", "smoke/code@1"], "smoke/merged", timeout=240)
        except MergeJobFailed as exc:
            fail(str(exc), worker_log)
        merged = client.pull("smoke/merged")
        if not (merged / "adapter_model.safetensors").is_file():
            fail("the merged version has no weights")
        print(f"wheel smoke test: merge job {job.id} succeeded on the worker")
    finally:
        for proc in (worker, server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, log in ((worker, worker_log), (server, server_log)):
            if proc is None:
                continue
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                fail("a process did not stop on SIGTERM", log)
    if server.returncode not in (0, -signal.SIGTERM):  # uvicorn re-raises the SIGTERM it handled
        fail(f"the server exited with {server.returncode} on SIGTERM", server_log)
    print("wheel smoke test: passed")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
