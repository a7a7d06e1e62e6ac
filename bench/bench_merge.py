"""Benchmark merging: combining adapters (sdk vs peft) and merging an adapter into big base shards.

1. ``combine``: 4 LoRA adapters (r=16, alpha=32, q/k/v/o/gate/up/down, random non-zero factors, made
   and saved once by peft) on a Llama-shaped model (hidden 1024, intermediate 2816, 4 layers, vocab
   8000, fp32). Each variant runs in its own fresh process, which builds the base model, loads the
   four adapters (sdk: ``AdapterModel``; peft: ``PeftModel``) and then calls ``add_weighted_adapter``
   with the same arguments ``--repeats`` times (a new adapter name each time). Reported: the median
   wall time of a call, and the peak RSS the calls add on top of the loaded model (the kernel's
   high-water mark, reset right before the first call) as well as the process's total peak.
   Goals: sdk/peft <= 1.0 for time and for the added peak RSS, per combination type.
2. ``into_base``: a Llama-shaped fp32 base model of about 2.1 GB (hidden 2048, intermediate 5504,
   8 layers, vocab 32000, untied lm_head; seeded random tensors written straight to 5 safetensors
   shards in a temporary folder) and a LoRA r=16 on every linear layer and the embedding (so the
   largest tensor is merged too). A fresh process runs ``sdk.merge_adapter_into_base``; reported:
   wall time, throughput and the process's peak RSS (everything: interpreter, torch, the merge).
   Goal: peak RSS < 2 x largest tensor + 300 MB. The temporary folder is deleted afterwards.

Usage::

    .venv/bin/python bench/bench_merge.py                 # both sections
    .venv/bin/python bench/bench_merge.py --only combine --types svd cat
    .venv/bin/python bench/bench_merge.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")

TYPES = ["linear", "cat", "svd", "ties", "dare_ties_svd"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _llama(hidden: int, inter: int, layers: int, vocab: int):  # type: ignore[no-untyped-def]
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=16, num_key_value_heads=16, vocab_size=vocab, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def _small_llama():  # type: ignore[no-untyped-def]
    return _llama(1024, 2816, 4, 8000)


# --- section 1: combining adapters -------------------------------------------------------------


def make_adapters(folder: Path) -> list[str]:
    """Four random LoRA adapters saved by peft under ``folder/<name>``."""
    import torch
    from peft import LoraConfig, get_peft_model

    names = [f"a{i}" for i in range(4)]
    model = get_peft_model(_small_llama(), LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS,
                                                      init_lora_weights=False), names[0])
    for i, name in enumerate(names[1:]):
        torch.manual_seed(i + 1)
        model.add_adapter(name, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, init_lora_weights=False))
    model.save_pretrained(folder)
    return names


def combine_worker(variant: str, ctype: str, folder: Path, repeats: int, threads: int) -> dict[str, object]:
    """Runs in a fresh process: load the adapters with one library, time add_weighted_adapter."""
    import torch

    torch.set_num_threads(threads)
    names = [f"a{i}" for i in range(4)]
    if variant == "sdk":
        import sdk

        model = sdk.AdapterModel.from_pretrained(_small_llama(), folder / names[0], adapter_name=names[0])
        for n in names[1:]:
            model.load_adapter(folder / n, n)
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(_small_llama(), folder / names[0], adapter_name=names[0])
        for n in names[1:]:
            model.load_adapter(folder / n, n)
    weights = [0.5, 0.8, -0.3, 1.1]
    kw = {"density": 0.5} if ctype not in ("linear", "cat", "svd") else {}
    loaded = _status("VmRSS")
    _reset_peak()
    times = []
    for i in range(repeats):
        torch.manual_seed(i)
        t0 = time.perf_counter()
        model.add_weighted_adapter(names, weights, f"m{i}", combination_type=ctype, **kw)
        times.append(time.perf_counter() - t0)
        if i == 0:
            added = _status("VmHWM") - loaded
    return {"variant": variant, "type": ctype, "times": times, "median_s": statistics.median(times),
            "added_peak_bytes": added, "loaded_rss_bytes": loaded, "total_peak_bytes": _status("VmHWM")}


def run_combine(types: list[str], repeats: int, threads: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench_merge_adapters_") as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, __file__, "--make-adapters", str(folder)], check=True)
        for ctype in types:
            result: dict[str, dict[str, object]] = {}
            for variant in ("peft", "sdk"):
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", variant, ctype, str(folder), str(repeats), str(threads)],
                    check=True, capture_output=True, text=True,
                )
                result[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            s, p = result["sdk"], result["peft"]
            row = {
                "type": ctype,
                "sdk_s": s["median_s"], "peft_s": p["median_s"],
                "time_ratio": s["median_s"] / p["median_s"],  # type: ignore[operator]
                "sdk_added_mb": s["added_peak_bytes"] / 2**20, "peft_added_mb": p["added_peak_bytes"] / 2**20,  # type: ignore[operator]
                "rss_ratio": s["added_peak_bytes"] / max(1, p["added_peak_bytes"]),  # type: ignore[operator]
                "sdk_total_mb": s["total_peak_bytes"] / 2**20, "peft_total_mb": p["total_peak_bytes"] / 2**20,  # type: ignore[operator]
                "raw": result,
            }
            rows.append(row)
            verdict = "PASS" if row["time_ratio"] <= 1.0 and row["rss_ratio"] <= 1.0 else "MISS"  # type: ignore[operator]
            print(f"{ctype:>14}: time sdk {row['sdk_s']:.3f}s peft {row['peft_s']:.3f}s "
                  f"ratio {row['time_ratio']:.2f} | "
                  f"added peak RSS sdk {row['sdk_added_mb']:.0f} MB peft {row['peft_added_mb']:.0f} MB ratio "
                  f"{row['rss_ratio']:.2f} | total peak sdk {row['sdk_total_mb']:.0f} MB peft "
                  f"{row['peft_total_mb']:.0f} MB  {verdict}", flush=True)
    return rows


# --- section 2: merging into big base shards ---------------------------------------------------

BIG = {"hidden": 2048, "inter": 5504, "layers": 8, "vocab": 32000}


def _big_shapes() -> dict[str, tuple[int, ...]]:
    h, i, n, v = BIG["hidden"], BIG["inter"], BIG["layers"], BIG["vocab"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for layer in range(n):
        p = f"model.layers.{layer}"
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{p}.self_attn.{name}.weight"] = (h, h)
        shapes[f"{p}.mlp.gate_proj.weight"] = (i, h)
        shapes[f"{p}.mlp.up_proj.weight"] = (i, h)
        shapes[f"{p}.mlp.down_proj.weight"] = (h, i)
        shapes[f"{p}.input_layernorm.weight"] = (h,)
        shapes[f"{p}.post_attention_layernorm.weight"] = (h,)
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (v, h)
    return shapes


def make_big_base(folder: Path, shard_bytes: int = 500_000_000) -> tuple[int, int]:
    """Write the base shards (one tensor in memory at a time per shard group) and the adapter."""
    import torch
    from safetensors.torch import save_file

    import sdk
    from sdk.formats import save_adapter

    g = torch.Generator().manual_seed(0)
    shapes = _big_shapes()
    groups: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = 4 * torch.Size(shape).numel()
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    weight_map: dict[str, str] = {}
    for k, names in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: torch.randn(shapes[n], generator=g) * 0.02 for n in names}
        save_file(tensors, folder / "base" / fname, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, fname))
        del tensors
    total = sum(4 * torch.Size(s).numel() for s in shapes.values())
    (folder / "base" / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    state = {}
    for name, shape in shapes.items():
        path = name.removesuffix(".weight")
        leaf = path.rsplit(".", 1)[-1]
        if leaf in TARGETS:
            out_f, in_f = shape
            state[f"base_model.model.{path}.lora_A.weight"] = torch.randn(16, in_f, generator=g) * 0.01
            state[f"base_model.model.{path}.lora_B.weight"] = torch.randn(out_f, 16, generator=g) * 0.01
        elif leaf == "embed_tokens":
            vocab, dim = shape
            state[f"base_model.model.{path}.lora_embedding_A"] = torch.randn(16, vocab, generator=g) * 0.01
            state[f"base_model.model.{path}.lora_embedding_B"] = torch.randn(dim, 16, generator=g) * 0.01
    save_adapter(folder / "adapter", sdk.LoraConfig(r=16, lora_alpha=32, target_modules=[*TARGETS, "embed_tokens"]),
                 state)
    return total, max(4 * torch.Size(s).numel() for s in shapes.values())


def into_base_worker(folder: Path, threads: int) -> dict[str, object]:
    import torch

    import sdk

    torch.set_num_threads(threads)
    start_rss = _status("VmRSS")
    t0 = time.perf_counter()
    report = sdk.merge_adapter_into_base(folder / "base", folder / "adapter", folder / "out")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "merged": len(report.merged), "files": len(report.files),
            "total_bytes": report.total_bytes, "peak_rss_bytes": _status("VmHWM"), "start_rss_bytes": start_rss}


def run_into_base(threads: int, tmp_root: str | None) -> dict[str, object]:
    free = shutil.disk_usage(tmp_root or tempfile.gettempdir()).free
    if free < 6 * 10**9:
        raise SystemExit(f"need about 5 GB free in the temp folder, have {free / 1e9:.1f} GB")
    folder = Path(tempfile.mkdtemp(prefix="bench_merge_base_", dir=tmp_root))
    try:
        (folder / "base").mkdir()
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--make-big", str(folder)], check=True, capture_output=True,
                             text=True)
        total, largest = json.loads(out.stdout.strip().splitlines()[-1])
        made = time.perf_counter() - t0
        out = subprocess.run([sys.executable, __file__, "--big-worker", str(folder), str(threads)], check=True,
                             capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        budget = 2 * largest + 300 * 10**6
        r.update({"base_bytes": total, "largest_tensor_bytes": largest, "budget_bytes": budget,
                  "generate_s": made, "rss_ratio_to_budget": r["peak_rss_bytes"] / budget})
        verdict = "PASS" if r["peak_rss_bytes"] < budget else "MISS"
        print(f"into_base: {total / 1e9:.2f} GB in {len(list((folder / 'base').glob('*.safetensors')))} shards, "
              f"largest tensor {largest / 1e6:.0f} MB, {r['merged']} weights merged in {r['seconds']:.1f}s "
              f"({total / 1e6 / r['seconds']:.0f} MB/s); peak RSS {r['peak_rss_bytes'] / 1e6:.0f} MB "
              f"(process start {r['start_rss_bytes'] / 1e6:.0f} MB) vs budget {budget / 1e6:.0f} MB  {verdict}",
              flush=True)
        return r
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--make-adapters":
        make_adapters(Path(argv[1]))
        return 0
    if argv and argv[0] == "--worker":
        variant, ctype, folder, repeats, threads = argv[1:6]
        print(json.dumps(combine_worker(variant, ctype, Path(folder), int(repeats), int(threads))))
        return 0
    if argv and argv[0] == "--make-big":
        print(json.dumps(make_big_base(Path(argv[1]))))
        return 0
    if argv and argv[0] == "--big-worker":
        print(json.dumps(into_base_worker(Path(argv[1]), int(argv[2]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["combine", "into_base"], nargs="+", default=["combine", "into_base"])
    ap.add_argument("--types", nargs="+", default=TYPES, help=f"combination types (default: {' '.join(TYPES)})")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--tmp", default=None, help="folder for the 2 GB base model (default: the system temp folder)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    import peft
    import torch
    import transformers

    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}, threads {args.threads}, {os.cpu_count()} CPUs", flush=True)
    results: dict[str, object] = {}
    if "combine" in args.only:
        results["combine"] = run_combine(args.types, args.repeats, args.threads)
    if "into_base" in args.only:
        results["into_base"] = run_into_base(args.threads, args.tmp)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
