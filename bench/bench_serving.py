"""Serving costs, for capacity planning: requests per second of ``adapter-registry serve`` with 1 and 2
API processes, and the CPU each request costs the API processes and PostgreSQL.

Throughput on a shared 2-core machine swings with whatever else runs; CPU time per request (read from
``/proc`` for the API processes and for the embedded PostgreSQL's processes, before and after each
load run) barely does, and it is what the arithmetic in docs/scaling.md needs: cores = rate × CPU per
request. Each endpoint runs under ``wrk -t1 -c16`` (``apt-get install wrk``) for ``--seconds``; rounds
alternate the configurations and medians are reported.

- ``/livez``: no database (the HTTP stack, middleware and metrics);
- ``/api/v1/health``: one trivial query;
- ``GET …/versions/latest``: a metadata read (anonymous, and with a token);
- a 64 MiB file streamed through the API (``?stream=1``), in MiB/s and CPU seconds per GiB.

Run: ``.venv/bin/python bench/bench_serving.py [--workers 1 2] [--rounds 3] [--seconds 5] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sdk  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(roots: list[psutil.Process]) -> float:
    """CPU seconds of ``roots`` and all their descendants, those that ended included (a root's
    ``children_*`` times hold its reaped children's: PostgreSQL's backends come and go)."""
    total = 0.0
    for root in roots:
        try:
            t = root.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
            for child in root.children(recursive=True):
                c = child.cpu_times()
                total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def postmasters(pgdir: Path) -> list[psutil.Process]:
    """The postmaster of the PostgreSQL whose data lives in ``pgdir`` (its backends are its children)."""
    pg = str(pgdir)
    return [p for p in psutil.process_iter(["cmdline"])
            if "postgres" in " ".join(p.info.get("cmdline") or []) and pg in " ".join(p.info["cmdline"])
            and (p.parent() is None or pg not in " ".join(p.parent().cmdline()))]


class Server:
    """``adapter-registry serve --workers N`` on a fresh embedded default, with one public adapter
    (``database_url``/``data``: an existing database and data folder instead, seeded only when
    ``seed``; ``big``: also the 64 MiB adapter of the streaming figure)."""

    def __init__(self, workers: int, *, database_url: str | None = None, data: Path | None = None,
                 seed: bool = True, big: bool = True) -> None:
        self.data = data or Path(tempfile.mkdtemp(prefix="bench-serving-"))
        self.owns_data = data is None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = shutil.which("adapter-registry", path=str(Path(sys.executable).parent)) or "adapter-registry"
        env = dict(os.environ, ADAPTER_REGISTRY_DATABASE_URL=database_url) if database_url else None
        self.proc = subprocess.Popen([exe, "serve", "--workers", str(workers), "--port", str(self.port),
                                      "--data-dir", str(self.data), "--log-level", "warning"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(480):
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200 and \
                        (self.data / "admin-token").exists():
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("the server did not start")
        self.admin = (self.data / "admin-token").read_text().strip()
        if seed:
            self._seed(big)

    def _seed(self, big: bool = True) -> None:
        from safetensors.torch import save_file
        from transformers import LlamaConfig, LlamaForCausalLM

        auth = {"Authorization": f"Bearer {self.admin}"}
        cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2).to_dict()
        httpx.post(self.url + "/api/v1/base-models", json={"name": "bench/tiny", "config": cfg}, headers=auth,
                   timeout=60).raise_for_status()
        with tempfile.TemporaryDirectory() as tmp:
            lora = sdk.LoraConfig(r=4, init_lora_weights=False)
            sdk.get_peft_model(LlamaForCausalLM(LlamaConfig(**cfg)), lora).save_pretrained(tmp)
            names = ("adapter_config.json", "adapter_model.safetensors")
            files = {n: (n, (Path(tmp) / n).read_bytes()) for n in names}
            httpx.post(self.url + "/api/v1/adapters/bench/tiny/versions", files=files, timeout=60,
                       data={"base_model": "bench/tiny"}, headers=auth).raise_for_status()
            if not big:
                return
            # A 64 MiB adapter for the streaming figure (rank 64 on a 4096-wide, 16-layer shape).
            import torch

            wide = LlamaConfig(vocab_size=100, hidden_size=4096, intermediate_size=64, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=32)
            httpx.post(self.url + "/api/v1/base-models", json={"name": "bench/wide", "config": wide.to_dict()},
                       headers=auth, timeout=60).raise_for_status()
            tensors = {}
            for i in range(16):
                key = f"base_model.model.model.layers.{i}.self_attn.q_proj"
                tensors[f"{key}.lora_A.weight"] = torch.randn(64, 4096)
                tensors[f"{key}.lora_B.weight"] = torch.randn(4096, 64) * 0.01
            save_file(tensors, f"{tmp}/big.safetensors", metadata={"format": "pt"})
            config = sdk.LoraConfig(r=64, lora_alpha=128, target_modules=["q_proj"]).to_json().encode()
            weights = Path(f"{tmp}/big.safetensors").read_bytes()
            files = {"adapter_config.json": ("adapter_config.json", config),
                     "adapter_model.safetensors": ("adapter_model.safetensors", weights)}
            httpx.post(self.url + "/api/v1/adapters/bench/big/versions", files=files, timeout=300,
                       data={"base_model": "bench/wide"}, headers=auth).raise_for_status()

    def api_processes(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid)]

    def postgres_processes(self) -> list[psutil.Process]:
        """The embedded PostgreSQL's postmaster (its backends are its children)."""
        return postmasters(self.data / "pg")

    def stop(self) -> None:
        stop_process(self.proc)
        if self.owns_data:
            shutil.rmtree(self.data, ignore_errors=True)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a minute."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def wrk(url: str, seconds: float, headers: dict[str, str]) -> tuple[int, float]:
    cmd = ["wrk", "-t1", "-c16", f"-d{int(seconds)}s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return requests, float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def measure(server: Server, path: str, seconds: float, headers: dict[str, str]) -> dict[str, float]:
    api, pg = server.api_processes(), server.postgres_processes()
    a0, p0 = cpu_seconds(api), cpu_seconds(pg)
    n, rate = wrk(server.url + path, seconds, headers)
    a1, p1 = cpu_seconds(api), cpu_seconds(pg)
    return {"req_s": rate, "api_cpu_ms": (a1 - a0) / n * 1e3, "pg_cpu_ms": (p1 - p0) / n * 1e3}


def stream(server: Server) -> dict[str, float]:
    url = server.url + "/api/v1/adapters/bench/big/versions/1/files/adapter_model.safetensors?stream=1"
    api = server.api_processes()
    a0, t0, size = cpu_seconds(api), time.perf_counter(), 0
    for _ in range(4):
        with httpx.stream("GET", url, timeout=120) as r:
            for chunk in r.iter_bytes(1 << 20):
                size += len(chunk)
    elapsed, a1 = time.perf_counter() - t0, cpu_seconds(api)
    gib = size / 2**30
    return {"mib_s": size / 2**20 / elapsed, "api_cpu_s_per_gib": (a1 - a0) / gib}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install -y wrk")
    servers = {w: Server(w) for w in args.workers}
    cases = {"livez": ("/livez", {}), "health": ("/api/v1/health", {}),
             "version": ("/api/v1/adapters/bench/tiny/versions/latest", {}),
             "version+token": ("/api/v1/adapters/bench/tiny/versions/latest", "token")}
    results: dict[int, dict[str, list[dict[str, float]]]] = {w: {c: [] for c in [*cases, "stream"]}
                                                             for w in args.workers}
    try:
        for server in servers.values():
            wrk(server.url + "/api/v1/health", 2, {})  # warm every process
        for rnd in range(args.rounds):
            order = args.workers if rnd % 2 == 0 else list(reversed(args.workers))
            for w in order:
                server = servers[w]
                auth = {"Authorization": f"Bearer {server.admin}"}
                for name, (path, headers) in cases.items():
                    results[w][name].append(measure(server, path, args.seconds, auth if headers else {}))
                results[w]["stream"].append(stream(server))
    finally:
        for server in servers.values():
            server.stop()
    summary: dict[str, Any] = {}
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} cores)")
    print(f"{'API processes':>14} {'endpoint':>14} {'req/s':>8} {'API CPU ms/req':>15} {'PG CPU ms/req':>14}")
    for w in args.workers:
        summary[w] = {}
        for name in cases:
            runs = results[w][name]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            summary[w][name] = med
            print(f"{w:>14} {name:>14} {med['req_s']:>8.0f} {med['api_cpu_ms']:>15.2f} {med['pg_cpu_ms']:>14.2f}")
        runs = results[w]["stream"]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        summary[w]["stream"] = med
        print(f"{w:>14} {'64 MiB stream':>14} {med['mib_s']:>6.0f} MiB/s, API CPU {med['api_cpu_s_per_gib']:.2f} s/GiB")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "raw": results, "load": load}, indent=2))


if __name__ == "__main__":
    main()
