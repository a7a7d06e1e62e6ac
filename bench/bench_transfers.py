"""Transfer benchmark: SDK push/pull of a large adapter vs raw boto3 put/get of the same bytes.

Starts SeaweedFS (S3) and the registry (a real ``adapter-registry serve`` process whose blobs go
to that S3 server), registers a wide Llama-shaped base model by its config, writes a LoRA
adapter of about ``--mb`` MB, then in one run times:

- SDK ``push`` (local signature check, presigned parallel multipart upload straight to S3 while
  the client hashes the file, server-side finalize: size + sha256 check by reading the object
  back, header validation meanwhile, publish; the object stays where it was uploaded)
- SDK ``pull`` into an empty cache (ranged parallel downloads from presigned URLs, sha256 check)
- SDK ``pull`` again, pinned by version (served from the cache)
- boto3 ``upload_file`` / ``download_file`` (managed multipart transfers, default concurrency)
  of the same file to the same bucket

Goals: SDK throughput at least 0.8x boto3 both ways; a cached pull at most 5% of the transfer.

Run: ``.venv/bin/python bench/bench_transfers.py [--mb 256] [--repeat 3] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import sdk  # noqa: E402
from sdk.client import Client  # noqa: E402

HIDDEN = 4096


def write_adapter(folder: Path, mb: int) -> Path:
    """A LoRA on q,k,v,o of 4 layers with the rank that makes it about ``mb`` MB."""
    r = max(1, round(mb * 2**20 / (16 * 2 * HIDDEN * 4)))
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(4):
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            key = f"base_model.model.model.layers.{i}.self_attn.{m}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, HIDDEN, generator=g)
            tensors[f"{key}.lora_B.weight"] = torch.randn(HIDDEN, r, generator=g)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = sdk.LoraConfig(r=r, lora_alpha=r, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    cfg.save(folder)
    return folder


def base_config() -> dict:
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=256, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=4,
                      num_attention_heads=32, num_key_value_heads=32)
    return cfg.to_dict() | {"architectures": ["LlamaForCausalLM"]}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    import boto3
    from botocore.config import Config
    from e2e_server import start_server
    from s3_fixtures import SeaweedProcess

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-transfers-"))
    weed = SeaweedProcess(work / "weed")
    weed.start()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    env = {"ADAPTER_REGISTRY_S3_ENDPOINT": weed.endpoint_url, "ADAPTER_REGISTRY_S3_BUCKET": bucket,
           "ADAPTER_REGISTRY_S3_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    server = start_server(work / "registry", env)
    try:
        folder = write_adapter(work / "adapter", args.mb)
        weights = folder / "adapter_model.safetensors"
        size = weights.stat().st_size
        print(f"adapter: {size / 2**20:.0f} MiB; registry {server.url}; S3 {weed.endpoint_url}")
        admin = Client(server.url, server.admin, cache_dir=work / "cache-admin", quiet=True)
        admin.register_base_model(base_config(), "bench/wide")
        s3 = boto3.client("s3", endpoint_url=weed.endpoint_url, region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}))
        from boto3.s3.transfer import TransferConfig

        tcfg = TransferConfig()  # boto3's defaults: 8 MiB parts, 10 threads
        push_t: list[float] = []
        pull_t: list[float] = []
        cached_t: list[float] = []
        put_t: list[float] = []
        get_t: list[float] = []
        pushed: list[sdk.client.PushResult] = []
        for i in range(args.repeat):
            # interleave the peers and swap who goes first every round, so drift (SeaweedFS settling
            # after the previous transfer, other load) hits both alike
            def boto_put(i: int = i) -> None:
                t0 = time.perf_counter()
                s3.upload_file(str(weights), bucket, f"raw/{i}", Config=tcfg)
                put_t.append(time.perf_counter() - t0)

            def sdk_push(i: int = i) -> None:
                t0 = time.perf_counter()
                pushed.append(admin.push(folder, f"bench/big{i}", "bench/wide"))
                push_t.append(time.perf_counter() - t0)

            def boto_get(i: int = i) -> None:
                dest = work / f"raw-{i}.bin"
                t0 = time.perf_counter()
                s3.download_file(bucket, f"raw/{i}", str(dest), Config=tcfg)
                get_t.append(time.perf_counter() - t0)
                dest.unlink()

            def sdk_pull(i: int = i) -> None:
                cache = work / f"cache-{i}"
                with Client(server.url, server.admin, cache_dir=cache, quiet=True) as c:
                    t0 = time.perf_counter()
                    c.pull(f"bench/big{i}@{pushed[-1].version}")
                    pull_t.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    c.pull(f"bench/big{i}@{pushed[-1].version}")
                    cached_t.append(time.perf_counter() - t0)
                shutil.rmtree(cache)

            ups, downs = [boto_put, sdk_push], [boto_get, sdk_pull]
            if i % 2:
                ups.reverse()
                downs.reverse()
            for step in ups + downs:
                step()
        mib = size / 2**20
        rows = {
            "sdk_push_s": median(push_t), "boto3_put_s": median(put_t),
            "sdk_pull_s": median(pull_t), "boto3_get_s": median(get_t), "cached_pull_s": median(cached_t),
        }
        up = rows["boto3_put_s"] / rows["sdk_push_s"]
        down = rows["boto3_get_s"] / rows["sdk_pull_s"]
        cached_share = rows["cached_pull_s"] / rows["sdk_pull_s"]
        print(f"{'':>14} {'seconds':>8} {'MiB/s':>8}")
        for k, v in rows.items():
            print(f"{k:>14} {v:8.3f} {mib / v:8.0f}")
        print(f"push throughput sdk/boto3: {up:.2f}  (goal >= 0.8)  {'PASS' if up >= 0.8 else 'MISS'}")
        print(f"pull throughput sdk/boto3: {down:.2f}  (goal >= 0.8)  {'PASS' if down >= 0.8 else 'MISS'}")
        verdict = "PASS" if cached_share <= 0.05 else "MISS"
        print(f"cached pull / pull time:   {cached_share:.3%}  (goal <= 5%)  {verdict}")
        if args.json:
            args.json.write_text(json.dumps(rows | {"bytes": size, "push_ratio": up, "pull_ratio": down,
                                                     "cached_share": cached_share}, indent=2))
    finally:
        server.process.kill()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
