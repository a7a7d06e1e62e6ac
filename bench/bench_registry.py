"""Registry benchmarks: upload validation cost by adapter size, and metadata read throughput.

1. Validation: the registry's check of an upload (``check_weights``: safetensors header, dtypes,
   shapes against the base-model signature, untrained-adapter probe) on a ~10 MB and a ~1 GB
   adapter. It reads the header and one small chunk, so both should take about the same time.
   Peers in the same run: ``safetensors.safe_open`` listing keys and shapes (also header-only)
   and ``safetensors.torch.load_file`` (what a naive validator does: load everything).
2. Metadata reads: ``adapter-registry serve`` (``--workers N`` API processes, embedded PostgreSQL)
   answering ``GET /api/v1/adapters/{ns}/{name}/versions/latest`` under a closed-loop load generator
   on loopback (separate processes), next to ``GET /api/v1/health`` (one trivial query) and
   ``GET /livez`` (no database) as references.

Run: ``.venv/bin/python bench/bench_registry.py [--quick] [--workers 1 2] [--reads-only] [--json out.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sdk  # noqa: E402
from registry_service.domain.adapters.validation import check_weights  # noqa: E402
from sdk.safetensors_header import file_reader  # noqa: E402
from sdk.signature import signature_from_config  # noqa: E402

HIDDEN = 4096
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


def base_config(layers: int = 4) -> dict:
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=256, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=32)
    return cfg.to_dict() | {"architectures": ["LlamaForCausalLM"]}


def write_adapter(path: Path, r: int, layers: int = 4) -> sdk.LoraConfig:
    """A LoRA on q,k,v,o of every layer, rank ``r`` (size ≈ layers·4·2·4096·r·4 bytes)."""
    tensors = {}
    for i in range(layers):
        for m in MODULES:
            key = f"base_model.model.model.layers.{i}.self_attn.{m}"
            tensors[f"{key}.lora_A.weight"] = torch.full((r, HIDDEN), 0.01)
            tensors[f"{key}.lora_B.weight"] = torch.full((HIDDEN, r), 0.02)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return sdk.LoraConfig(r=r, lora_alpha=r, target_modules=list(MODULES))


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_validation(quick: bool) -> list[dict]:
    signature = signature_from_config(base_config())
    rows = []
    sizes = [("10 MB", 20)] + ([] if quick else [("1 GB", 2048)])
    with tempfile.TemporaryDirectory() as tmp:
        for label, r in sizes:
            path = Path(tmp) / f"adapter-{r}.safetensors"
            config = write_adapter(path, r)
            size = path.stat().st_size

            def ours(path: Path = path, size: int = size, config: sdk.LoraConfig = config) -> None:
                with open(path, "rb") as f:
                    check_weights(file_reader(f), size, config, signature)

            def header_peer(path: Path = path) -> None:
                with safe_open(str(path), "pt") as f:
                    {k: f.get_slice(k).get_shape() for k in f.keys()}

            def load_peer(path: Path = path) -> None:
                load_file(str(path))

            ours()  # warm
            t_ours = timed(ours, 20)
            t_hdr = timed(header_peer, 20)
            t_load = timed(load_peer, 3 if size > 2**28 else 10)
            rows.append({"size": label, "bytes": size, "ours_ms": t_ours * 1e3, "safe_open_ms": t_hdr * 1e3,
                         "load_file_ms": t_load * 1e3})
            path.unlink()
    return rows


# --- metadata read throughput ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_worker(url: str, headers: dict, seconds: float, concurrency: int, out: mp.Queue) -> None:
    import httpx

    async def run() -> tuple[int, int, list[float]]:
        done = errors = 0
        lat: list[float] = []
        deadline = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            async def loop() -> None:
                nonlocal done, errors
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    r = await client.get(url, headers=headers)
                    lat.append(time.perf_counter() - t0)
                    if r.status_code == 200:
                        done += 1
                    else:
                        errors += 1

            await asyncio.gather(*(loop() for _ in range(concurrency)))
        return done, errors, lat

    out.put(asyncio.run(run()))


def load(url: str, seconds: float, procs: int = 2, concurrency: int = 16, headers: dict | None = None) -> dict:
    """Load with ``wrk`` when installed (``apt-get install wrk``), else the Python generator below."""
    wrk = shutil.which("wrk")
    if wrk:
        return load_wrk(wrk, url, seconds, concurrency, headers or {})
    return load_python(url, seconds, procs, concurrency, headers)


def load_wrk(wrk: str, url: str, seconds: float, connections: int, headers: dict) -> dict:
    """One ``wrk`` run (1 thread: the server has the other core) and its parsed summary."""
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 30).stdout

    def ms(label: str) -> float:
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == label:
                v = parts[1]
                scale = {"ms": 1.0, "us": 1e-3}.get(v[-2:])
                return float(v[:-2]) * scale if scale else float(v[:-1]) * 1000
        return float("nan")

    req_s = next((float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec")), 0.0)
    errors = sum(int(line.split()[-1]) for line in out.splitlines() if line.strip().startswith("Non-2xx"))
    return {"req_s": req_s, "errors": errors, "p50_ms": ms("50%"), "p99_ms": ms("99%"), "tool": "wrk"}


def load_python(url: str, seconds: float, procs: int = 2, concurrency: int = 16, headers: dict | None = None) -> dict:
    """Closed-loop load from ``procs`` processes × ``concurrency`` connections; bounded by ``seconds``."""
    q: mp.Queue = mp.Queue()
    args = (url, headers or {}, seconds, concurrency, q)
    workers = [mp.Process(target=_load_worker, args=args) for _ in range(procs)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    results = [q.get() for _ in workers]
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    done = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[2])
    return {"req_s": done / seconds, "errors": sum(r[1] for r in results), "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1e3, "elapsed_s": elapsed}


def bench_reads(quick: bool, workers: int = 1) -> dict:
    import httpx

    data_dir = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    port = free_port()
    exe = shutil.which("adapter-registry", path=str(Path(sys.executable).parent)) or "adapter-registry"
    server = subprocess.Popen([exe, "serve", "--port", str(port), "--data-dir", str(data_dir), "--log-level",
                               "warning", "--workers", str(workers)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200 and (data_dir / "admin-token").exists():
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        admin = (data_dir / "admin-token").read_text().strip()
        auth = {"Authorization": f"Bearer {admin}"}
        from transformers import LlamaConfig

        cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2).to_dict()
        httpx.post(base + "/api/v1/base-models", json={"name": "meta/tiny", "config": cfg}, headers=auth,
                   timeout=60).raise_for_status()
        with tempfile.TemporaryDirectory() as tmp:
            from transformers import LlamaForCausalLM

            tiny = LlamaForCausalLM(LlamaConfig(**cfg))
            model = sdk.get_peft_model(tiny, sdk.LoraConfig(r=4, init_lora_weights=False))
            model.save_pretrained(tmp)
            files = {n: (n, (Path(tmp) / n).read_bytes()) for n in ("adapter_config.json", "adapter_model.safetensors")}
            httpx.post(base + "/api/v1/adapters/bench/tiny/versions", files=files, data={"base_model": "meta/tiny"},
                       headers=auth, timeout=60).raise_for_status()
        seconds = 3.0 if quick else 10.0
        load(base + "/api/v1/health", 2.0)  # warm up (every process)
        livez = load(base + "/livez", seconds)
        health = load(base + "/api/v1/health", seconds)
        version = load(base + "/api/v1/adapters/bench/tiny/versions/latest", seconds)
        private_auth = load(base + "/api/v1/adapters/bench/tiny/versions/latest", seconds, headers=auth)
        return {"livez": livez, "health": health, "get_version": version, "get_version_with_token": private_auth}
    finally:
        server.terminate()  # graceful: the embedded PostgreSQL stops too
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 MB only, short load runs")
    ap.add_argument("--json", type=Path, help="write results here")
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="API process counts to measure")
    ap.add_argument("--reads-only", action="store_true", help="skip the validation part")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    rows = [] if args.reads_only else validation_table(args.quick)
    all_reads = {}
    for workers in args.workers:
        print(f"\n== metadata reads ({workers} API process(es), embedded PostgreSQL; wrk -t1 -c16 if installed) ==")
        reads = all_reads[workers] = bench_reads(args.quick, workers)
        for name, r in reads.items():
            print(f"{name:>24}: {r['req_s']:8.0f} req/s  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
                  f"errors {r['errors']}")
        print(f"GET version / health throughput: {reads['get_version']['req_s'] / reads['health']['req_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"validation": rows, "reads": all_reads}, indent=2))


def validation_table(quick: bool) -> list[dict]:
    """Run and print the validation part."""
    print("== upload validation (median) ==")
    rows = bench_validation(quick)
    print(f"{'adapter':>8} {'bytes':>14} {'ours ms':>9} {'safe_open ms':>13} {'load_file ms':>13} {'load/ours':>10}")
    for r in rows:
        print(f"{r['size']:>8} {r['bytes']:>14,} {r['ours_ms']:>9.2f} {r['safe_open_ms']:>13.2f} "
              f"{r['load_file_ms']:>13.1f} {r['load_file_ms'] / r['ours_ms']:>9.0f}x")
    if len(rows) == 2:
        ratio = rows[1]["ours_ms"] / rows[0]["ours_ms"]
        verdict = "PASS" if ratio < 2.0 else "MISS"
        print(f"1 GB / 10 MB validation time: {ratio:.2f}  (goal: about the same, < 2x)  {verdict}")
    return rows


if __name__ == "__main__":
    main()
