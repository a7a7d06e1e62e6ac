"""Benchmark Arrow routing: ``sdk.create_arrow_model`` against PEFT's in one run, and loading an Arrow
composition from the registry (stored prototypes) against building it locally (prototypes computed here).

Model: ``bench_lora.py``'s Llama-shaped ``LlamaForCausalLM`` (hidden 1024, 4 layers, vocab 8000, fp32, seeded
random weights). Library: 8 LoRA experts (r=16, alpha=32, random non-zero A and B, on q/k/v/o_proj, 16
adapted layers), saved once in PEFT's format; both libraries load the same folders. Arrow: top_k=3,
temperature 1.0, rng_seed 0.

Sections:

1. ``forward``  batch 4 x seq 128, eval mode, ``torch.inference_mode``, interleaved rounds of sdk Arrow,
                PEFT Arrow and the plain base model (no adapter layers); logits of sdk and PEFT must agree
                (atol 1e-4) before timing. Peak memory of one forward: on CUDA ``max_memory_allocated``
                above what the model holds; on CPU the peak RSS growth during one forward in a fresh (spawned)
                process that builds the same model (after a small warm-up forward, the peak reset through
                ``/proc/self/clear_refs``: building the model peaks higher than a forward).
2. ``load``     a registry (``adapter-registry serve`` on its embedded default) holding the 8 experts as
                adapters and an 8-member Arrow composition; time from nothing to the first routed logits for
                ``Client.load(base, "bench/arrow@prod")`` (members cached, prototypes downloaded from the
                registry) vs ``sdk.create_arrow_model`` on the same cached folders (prototypes computed locally
                by power iteration). The base model is deep-copied for each try (not timed).

Usage::

    .venv/bin/python bench/bench_routing.py            # both sections (a few minutes on 2 cores)
    .venv/bin/python bench/bench_routing.py --quick    # smoke test
    .venv/bin/python bench/bench_routing.py --only forward --device cuda
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_lora as bl
import peft
from transformers import LlamaForCausalLM

import sdk

EXPERTS = 8
TOP_K = 3
GOALS = {"forward sdk/peft": 1.00, "forward sdk/base": 1.15}


def save_library(base: torch.nn.Module, root: Path) -> list[str]:
    """Eight experts with random non-zero factors, saved in PEFT's format."""
    paths = []
    for i in range(EXPERTS):
        torch.manual_seed(100 + i)
        m = sdk.get_peft_model(copy.deepcopy(base), sdk.LoraConfig(r=16, lora_alpha=32, target_modules=bl.TARGETS,
                                                                    init_lora_weights=False))
        for layer in bl.sdk_lora_layers(m).values():  # B at the scale of a trained adapter, not Kaiming's
            with torch.no_grad():
                layer.lora_B["default"].mul_(0.05)
        m.save_pretrained(root / f"expert{i}")
        paths.append(str(root / f"expert{i}"))
    return paths


def _peak_worker(kind: str, paths: list[str], out: mp.Queue) -> None:
    """In a fresh (spawned) process: build ``kind`` like the parent does, then report the peak RSS growth of
    one forward (``ru_maxrss`` before and after; the process holds nothing else)."""
    torch.manual_seed(0)
    base = LlamaForCausalLM(bl.llama_config()).eval()
    inputs = torch.randint(0, 8000, (4, 128), generator=torch.Generator().manual_seed(1))
    cfg = {"top_k": TOP_K, "router_temperature": 1.0, "rng_seed": 0}
    if kind == "sdk":
        model = sdk.create_arrow_model(base, paths, sdk.ArrowConfig(**cfg))
    elif kind == "peft":
        model = peft.create_arrow_model(base, paths, peft.ArrowConfig(**cfg))
    else:
        model = base
    with torch.inference_mode():
        model(input_ids=inputs[:1, :8], use_cache=False)  # build prototypes / caches first
        before = _reset_peak_rss()
        model(input_ids=inputs, use_cache=False)
        after = _peak_rss()
    out.put(after - before)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> int:
    """Reset the process's peak RSS (Linux: ``5`` to ``/proc/self/clear_refs``) and return the RSS now, in bytes;
    building the model peaked higher than one forward does, so without a reset the growth would read 0."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS") * 1024
    except OSError:  # no /proc: the peak so far stands in (the growth may then read low)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    """The peak RSS since :func:`_reset_peak_rss`, in bytes."""
    try:
        return _status_kib("VmHWM") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory(kind: str, fn, paths: list[str]) -> int:  # type: ignore[no-untyped-def]
    """Peak extra memory of one forward of ``kind``."""
    if bl.DEVICE.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        with torch.inference_mode():
            fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_peak_worker, args=(kind, paths, out))
    proc.start()
    value = out.get(timeout=1800)
    proc.join()
    return int(value)


def bench_forward(base: torch.nn.Module, paths: list[str], inputs: torch.Tensor, warmup: int, reps: int) -> dict:
    cfg = {"top_k": TOP_K, "router_temperature": 1.0, "rng_seed": 0}
    ours = sdk.create_arrow_model(copy.deepcopy(base), paths, sdk.ArrowConfig(**cfg)).to(bl.DEVICE).eval()
    theirs = peft.create_arrow_model(copy.deepcopy(base), paths, peft.ArrowConfig(**cfg)).to(bl.DEVICE).eval()
    plain = copy.deepcopy(base).to(bl.DEVICE).eval()
    fns = {"sdk": lambda: ours(input_ids=inputs, use_cache=False),
           "peft": lambda: theirs(input_ids=inputs, use_cache=False),
           "base": lambda: plain(input_ids=inputs, use_cache=False)}
    with torch.inference_mode():
        diff = (fns["sdk"]().logits - fns["peft"]().logits).abs().max().item()
        effect = (fns["sdk"]().logits - fns["base"]().logits).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f"sdk and PEFT Arrow disagree: max |Δlogit| = {diff}")
        times = bl.time_interleaved(fns, warmup, reps)
    peaks = {k: peak_memory(k, f, paths) for k, f in fns.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "median_ms": {k: 1000 * v for k, v in med.items()},
        "sdk/peft": med["sdk"] / med["peft"], "sdk/peft_ci95": bl.ratio_ci(times["sdk"], times["peft"]),
        "sdk/base": med["sdk"] / med["base"], "sdk/base_ci95": bl.ratio_ci(times["sdk"], times["base"]),
        "peft/base": med["peft"] / med["base"],
        "peak_mib": {k: v / 2**20 for k, v in peaks.items()},
        "max_abs_logit_diff": diff, "max_abs_effect_vs_base": effect, "rounds": len(times["sdk"]),
    }


def _serve(data_dir: Path) -> tuple[subprocess.Popen, str, str]:
    import httpx

    port = bl_free_port()
    exe = shutil.which("adapter-registry", path=str(Path(sys.executable).parent)) or "adapter-registry"
    server = subprocess.Popen([exe, "serve", "--port", str(port), "--data-dir", str(data_dir), "--log-level",
                               "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):  # a loaded machine starts PostgreSQL slowly
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200 and (data_dir / "admin-token").exists():
                return server, url, (data_dir / "admin-token").read_text().strip()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise SystemExit("the registry did not start")


def bl_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_load(base: torch.nn.Module, paths: list[str], inputs: torch.Tensor, reps: int) -> dict:
    from sdk.client import Client
    from sdk.tuners.lora.arrow_model import current_prototypes

    data_dir = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    server, url, admin = _serve(data_dir)
    try:
        with Client(url, admin, cache_dir=data_dir / "client-cache", quiet=True) as c:
            c.register_base_model(base.config.to_dict() | {"architectures": ["LlamaForCausalLM"]}, "bench/llama")
            members = []
            for i, p in enumerate(paths):
                c.push(p, f"bench/expert{i}", base_model="bench/llama")
                members.append(f"bench/expert{i}")
            t0 = time.perf_counter()
            made = c.create_composition("bench/arrow", members, {"kind": "arrow", "top_k": TOP_K, "rng_seed": 0},
                                        alias="prod")
            publish_s = time.perf_counter() - t0
            folders = [str(c.pull(f"{m['adapter']}@{m['commit']}")) for m in made["members"]]
            cfg = sdk.ArrowConfig(top_k=TOP_K, rng_seed=0)

            def registry() -> torch.Tensor:
                m = c.load(copy.deepcopy(base), "bench/arrow@prod")
                with torch.inference_mode():
                    return m(input_ids=inputs, use_cache=False).logits

            def local() -> torch.Tensor:
                m = sdk.create_arrow_model(copy.deepcopy(base), folders, cfg)
                with torch.inference_mode():
                    return m(input_ids=inputs, use_cache=False).logits

            diff = (registry() - local()).abs().max().item()
            reg_t, loc_t = [], []
            for i in range(reps):
                for _name, fn, dest in (("registry", registry, reg_t), ("local", local, loc_t))[:: 1 if i % 2 else -1]:
                    t = time.perf_counter()
                    fn()
                    dest.append(time.perf_counter() - t)
            m = sdk.create_arrow_model(copy.deepcopy(base), folders, cfg)
            t = time.perf_counter()
            current_prototypes(m)
            svd_s = time.perf_counter() - t
        return {"publish_s": publish_s, "registry_load_s": statistics.median(reg_t),
                "local_build_s": statistics.median(loc_t), "prototype_compute_s": svd_s,
                "prototypes_bytes": made["files"][0]["size"], "max_abs_logit_diff": diff, "rounds": reps}
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


def print_forward(results: dict) -> None:
    """Section 1 for people."""
    f = results["forward"]
    print(f"forward (batch 4 x 128, {EXPERTS} experts, top_k {TOP_K}) on {results['device']}:")
    for k in ("sdk", "peft", "base"):
        print(f"  {k:5s} {f['median_ms'][k]:8.2f} ms   peak +{f['peak_mib'][k]:8.1f} MiB")
    for key, goal in GOALS.items():
        name = key.split()[1]
        lo, hi = f[f"{name}_ci95"]
        verdict = "PASS" if f[name] <= goal else "MISS"
        print(f"  {key:18s} {f[name]:.3f} (95% CI {lo:.3f}-{hi:.3f})  goal <= {goal:.2f}  {verdict}")
    print(f"  peft/base {f['peft/base']:.3f}; max |Δlogit| sdk vs peft {f['max_abs_logit_diff']:.2e}")


def print_load(results: dict) -> None:
    """Section 2 for people."""
    ld = results["load"]
    print(f"load ({EXPERTS}-member Arrow composition, to first logits): registry {ld['registry_load_s']:.3f} s, "
          f"local {ld['local_build_s']:.3f} s (prototypes alone {ld['prototype_compute_s']:.3f} s); "
          f"publish {ld['publish_s']:.2f} s; prototypes file {ld['prototypes_bytes']} bytes; "
          f"max |Δlogit| {ld['max_abs_logit_diff']:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few rounds (smoke test)")
    ap.add_argument("--only", choices=["forward", "load"], help="run one section")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bl.DEVICE = torch.device(args.device)
    torch.manual_seed(0)
    base = LlamaForCausalLM(bl.llama_config()).eval()
    inputs = torch.randint(0, 8000, (4, 128), generator=torch.Generator().manual_seed(1)).to(bl.DEVICE)
    results: dict = {"device": str(bl.DEVICE), "threads": args.threads, "torch": torch.__version__,
                     "peft": peft.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        paths = save_library(base, Path(tmp))
        if args.only in (None, "forward"):
            bl.log("forward: sdk Arrow vs PEFT Arrow vs base")
            results["forward"] = bench_forward(base, paths, inputs, 2 if args.quick else 5, 5 if args.quick else 30)
            print_forward(results)
        if args.only in (None, "load") and bl.DEVICE.type == "cpu":
            bl.log("load: registry composition (stored prototypes) vs local build")
            results["load"] = bench_load(base, paths, inputs[:1, :16].cpu(), 2 if args.quick else 7)
            print_load(results)
    results["noise"] = dict(bl.STATS)
    print(f"rounds {bl.STATS['rounds']}, noisy {bl.STATS['noisy_rounds']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
