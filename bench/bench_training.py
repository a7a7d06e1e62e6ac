"""Benchmark training with ``sdk`` against Hugging Face ``peft``: step time and peak memory, on CPU.

Model: the Llama-shaped model of ``bench_lora.py`` (hidden 1024, intermediate 2816, 4 layers,
16 heads, vocab 8000, seeded random weights), saved once to a temporary folder and loaded from
there by every variant (``from_pretrained``; in 4-bit through ``BitsAndBytesConfig``).

Variants (adapters on q_proj, k_proj, v_proj, o_proj; batch 4 x seq 128; AdamW; dropout 0):

- ``lora``     LoRA r=16, alpha=32 on the fp32 model
- ``adalora``  AdaLoRA init_r=16, target_r=8, tinit=0, tfinal=0, deltaT=1, total_step=10000 on the
               fp32 model: the rank allocator runs after every optimizer step (sdk: ``model.on_step_end``,
               peft: ``model.base_model.update_and_allocate``), the worst case for its cost
- ``qlora4``   LoRA r=16, alpha=32 on the model loaded in 4-bit nf4 (bitsandbytes, fp32 compute),
               after each library's ``prepare_model_for_kbit_training(use_gradient_checkpointing=False)``

One timed call = forward with ``labels`` + backward + ``AdamW.step()`` (+ the AdaLoRA hook) +
``zero_grad``. sdk and peft of one variant are timed in interleaved rounds whose order rotates
(``bench_lora.time_interleaved``: rounds disturbed by other processes are left out and re-run);
medians are reported. Peak memory: each (variant, library) runs alone in a fresh subprocess that
loads the model, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), runs a few
training steps and reads ``VmHWM``; "train peak" is that peak minus the RSS right after imports
(it includes the base weights, so QLoRA-4bit vs LoRA-fp32 shows what quantization saves).

A variant whose support is missing in sdk (e.g. no ``sdk.AdaLoraConfig`` yet) is reported as
skipped with the reason.

Usage::

    .venv/bin/python bench/bench_training.py            # full run
    .venv/bin/python bench/bench_training.py --quick    # smoke test
    .venv/bin/python bench/bench_training.py --only lora qlora4 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

warnings.filterwarnings("ignore")

import bench_lora as bl  # noqa: E402  (timing helpers shared with the LoRA benchmark)
import peft  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import sdk  # noqa: E402

VARIANTS = ("lora", "adalora", "qlora4")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
R, ALPHA = 16, 32
ADALORA = {"init_r": 16, "target_r": 8, "tinit": 0, "tfinal": 0, "deltaT": 1, "total_step": 10000}
SETTINGS = {
    # warmup, reps (interleaved rounds), training steps per memory subprocess
    "full": {"warmup": 3, "reps": 15, "mem_steps": 3},
    "quick": {"warmup": 1, "reps": 2, "mem_steps": 2},
}
GOAL = 1.00  # sdk/peft, for time and for memory


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_config(size: str) -> LlamaConfig:
    if size == "small":  # for trying the script out; not what bench/README.md reports
        return LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=8,
                           num_key_value_heads=8, vocab_size=2000)
    return bl.llama_config()


# --- building the models ---------------------------------------------------------------------


def unavailable(variant: str) -> str | None:
    """Why ``variant`` cannot run with this checkout of sdk (None: it can)."""
    if variant == "adalora" and not hasattr(sdk, "AdaLoraConfig"):
        return "sdk has no AdaLoraConfig yet"
    if variant == "qlora4":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            return "bitsandbytes is not installed"
        if not hasattr(sdk, "prepare_model_for_kbit_training"):
            return "sdk has no prepare_model_for_kbit_training yet"
    return None


def load_base(base_dir: Path, variant: str) -> torch.nn.Module:
    if variant != "qlora4":
        return LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    from transformers import BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    return LlamaForCausalLM.from_pretrained(base_dir, quantization_config=q, device_map="cpu", dtype=torch.float32)


def make_model(base_dir: Path, variant: str, lib: str) -> tuple[torch.nn.Module, Callable[[int], None] | None]:
    """A trainable model of ``variant`` built with ``lib`` and its per-step hook (AdaLoRA's allocator)."""
    base = load_base(base_dir, variant)
    mod = sdk if lib == "sdk" else peft
    if variant == "qlora4":
        base = mod.prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    torch.manual_seed(1234)
    # task_type CAUSAL_LM: peft adds AdaLoRA's orthogonal regulariser to the loss only through its task
    # wrapper, which sdk always does in training; without it the two would not do the same work.
    common = {"target_modules": list(TARGETS), "lora_dropout": 0.0, "task_type": "CAUSAL_LM"}
    if variant == "adalora":
        cfg = mod.AdaLoraConfig(lora_alpha=ALPHA, **ADALORA, **common)
    else:
        cfg = mod.LoraConfig(r=R, lora_alpha=ALPHA, **common)
    model = mod.get_peft_model(base, cfg)
    model.train()
    hook = None
    if variant == "adalora":
        hook = model.on_step_end if lib == "sdk" else model.base_model.update_and_allocate
    return model, hook


def make_step(model: torch.nn.Module, hook: Callable[[int], None] | None, inputs: torch.Tensor) -> Callable[[], float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    counter = itertools.count()

    def step() -> float:
        out = model(input_ids=inputs, labels=inputs, use_cache=False)
        out.loss.backward()
        opt.step()
        if hook is not None:
            hook(next(counter))
        opt.zero_grad(set_to_none=True)
        return float(out.loss)

    return step


def check_gradients(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Every trainable tensor must get a non-zero gradient; returns how many parameters train.

    One SGD step first: LoRA's B (AdaLoRA's Λ) starts at zero, which keeps the other factors' gradients
    at zero on the very first step. (This guards against the 4-bit CPU layout trap, where no gradient flows.)
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.SGD([p for _, p in params], lr=1e-3)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        model(input_ids=inputs, labels=inputs, use_cache=False).loss.backward()
        if _ == 0:
            opt.step()
    missing = [n for n, p in params if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reached {missing[:4]} ..."
    model.zero_grad(set_to_none=True)
    return sum(p.numel() for _, p in params)


def inputs_for(cfg: LlamaConfig, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, cfg.vocab_size, (4, 128), generator=g)


# --- time --------------------------------------------------------------------------------------


def bench_time(base_dir: Path, variant: str, inputs: torch.Tensor, warmup: int, reps: int) -> dict:
    models = {lib: make_model(base_dir, variant, lib) for lib in ("sdk", "peft")}
    counts = {lib: check_gradients(m, inputs) for lib, (m, _) in models.items()}
    assert counts["sdk"] == counts["peft"], f"trainable parameter counts differ: {counts}"
    steps = {lib: make_step(m, hook, inputs) for lib, (m, hook) in models.items()}
    times = bl.time_interleaved(steps, warmup, reps)
    return {
        "trainable_params": counts["sdk"],
        "sdk": bl.summary(times["sdk"]),
        "peft": bl.summary(times["peft"]),
        "ratio": statistics.median(times["sdk"]) / statistics.median(times["peft"]),
        "ratio_ci95": bl.ratio_ci(times["sdk"], times["peft"]),
        "paired_ratio": bl.paired_ratio(times["sdk"], times["peft"]),
        "times_s": times,
    }


# --- memory (one subprocess per variant and library) ------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_child(base_dir: Path, variant: str, lib: str, steps: int, size: str, seed: int) -> dict:
    """Runs in the subprocess: peak RSS of ``steps`` training steps, in MiB."""
    rss_imports = _status_kb("VmRSS")
    model, hook = make_model(base_dir, variant, lib)
    _trim()
    rss_model = _status_kb("VmRSS")
    peak_load = _status_kb("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    step = make_step(model, hook, inputs_for(model_config(size), seed))
    losses = [step() for _ in range(steps)]
    peak = _status_kb("VmHWM")
    mib = 1024
    return {
        "rss_after_imports_mib": rss_imports / mib,
        "rss_model_loaded_mib": rss_model / mib,
        "peak_while_loading_mib": peak_load / mib,
        "peak_training_mib": peak / mib,
        "train_peak_over_imports_mib": (peak - rss_imports) / mib,
        "losses": losses,
    }


def bench_memory(base_dir: Path, variants: list[str], steps: int, size: str, seed: int, threads: int) -> dict:
    out: dict = {}
    for variant in variants:
        out[variant] = {}
        for lib in ("sdk", "peft") if len(out) % 2 else ("peft", "sdk"):  # alternate who goes first
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", variant, lib, str(base_dir),
                   "--mem-steps", str(steps), "--size", size, "--seed", str(seed), "--threads", str(threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise RuntimeError(f"memory run {variant}/{lib} failed:\n{proc.stderr[-3000:]}")
            out[variant][lib] = json.loads(proc.stdout.strip().splitlines()[-1])
        s, p = out[variant]["sdk"], out[variant]["peft"]
        out[variant]["ratio"] = s["train_peak_over_imports_mib"] / p["train_peak_over_imports_mib"]
    if "lora" in out and "qlora4" in out:
        out["qlora4_vs_lora"] = {
            lib: out["qlora4"][lib]["train_peak_over_imports_mib"] / out["lora"][lib]["train_peak_over_imports_mib"]
            for lib in ("sdk", "peft")
        }
    return out


# --- report ------------------------------------------------------------------------------------


def report(results: dict) -> str:
    lines = [
        f"| {'variant':<9} | {'sdk step ms':>11} | {'peft step ms':>12} | {'time sdk/peft':>13} | {'95% interval':>13} "
        f"| {'sdk MiB':>8} | {'peft MiB':>8} | {'mem sdk/peft':>12} |",
        f"|{'-' * 11}|{'-' * 13}|{'-' * 14}|{'-' * 15}|{'-' * 15}|{'-' * 10}|{'-' * 10}|{'-' * 14}|",
    ]
    for v in VARIANTS:
        if v in results.get("skipped", {}):
            lines.append(f"| {v:<9} | skipped: {results['skipped'][v]:<96} |")
            continue
        t = results["time"].get(v)
        m = results["memory"].get(v)
        if t is None and m is None:
            continue
        cols = ["", "", "", ""]
        if t is not None:
            lo, hi = t["ratio_ci95"]
            interval = "n/a" if lo != lo else f"{lo:.3f}-{hi:.3f}"
            cols = [f"{t['sdk']['median_s'] * 1e3:.1f}", f"{t['peft']['median_s'] * 1e3:.1f}", f"{t['ratio']:.3f}",
                    interval]
        mcols = ["", "", ""]
        if m is not None:
            peaks = [m[lib]["train_peak_over_imports_mib"] for lib in ("sdk", "peft")]
            mcols = [f"{peaks[0]:.0f}", f"{peaks[1]:.0f}", f"{m['ratio']:.3f}"]
        lines.append(f"| {v:<9} | {cols[0]:>11} | {cols[1]:>12} | {cols[2]:>13} | {cols[3]:>13} "
                     f"| {mcols[0]:>8} | {mcols[1]:>8} | {mcols[2]:>12} |")
    q = results["memory"].get("qlora4_vs_lora")
    if q:
        lines.append("")
        lines.append(f"QLoRA-4bit / LoRA-fp32 train peak memory: sdk {q['sdk']:.3f}, peft {q['peft']:.3f}")
    return "\n".join(lines)


def goals(results: dict) -> dict:
    verdict = {}
    for v, t in results["time"].items():
        verdict[f"time.{v}"] = {"value": t["ratio"], "ci95": t["ratio_ci95"], "pass": t["ratio"] <= GOAL}
    for v, m in results["memory"].items():
        if v in VARIANTS:
            verdict[f"memory.{v}"] = {"value": m["ratio"], "pass": m["ratio"] <= GOAL}
    return verdict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions (a smoke test)")
    ap.add_argument("--only", nargs="*", choices=VARIANTS, help="run only these variants")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--no-time", action="store_true", help="skip the step timing")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", choices=["bench", "small"], default="bench", help="'small': a tiny model, to try it out")
    ap.add_argument("--mem-steps", type=int, default=None)
    ap.add_argument("--retries", type=float, default=None, help="extra rounds for noisy ones (default 1, quick 0)")
    ap.add_argument("--memory-child", nargs=3, metavar=("VARIANT", "LIB", "BASE_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    plan = SETTINGS[mode]
    mem_steps = args.mem_steps or plan["mem_steps"]

    if args.memory_child:
        variant, lib, base_dir = args.memory_child
        print(json.dumps(memory_child(Path(base_dir), variant, lib, mem_steps, args.size, args.seed)))
        return 0

    bl.RETRY_FACTOR = args.retries if args.retries is not None else (0 if args.quick else 1)
    cfg = model_config(args.size)
    wanted = args.only or list(VARIANTS)
    skipped = {v: why for v in wanted if (why := unavailable(v))}
    variants = [v for v in wanted if v not in skipped]
    env = {
        "mode": mode, "size": args.size, "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(), "loadavg_start": os.getloadavg(), "sdk_commit": bl._git_describe(),
    }
    results: dict = {"env": env, "skipped": skipped, "time": {}, "memory": {}}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        base_dir = Path(tmp) / "base"
        torch.manual_seed(args.seed)
        base = LlamaForCausalLM(cfg)
        env["base_params"] = sum(q.numel() for q in base.parameters())
        base.save_pretrained(base_dir)
        del base
        gc.collect()
        inputs = inputs_for(cfg, args.seed)
        log(f"[bench] {mode} run, {env['threads']} threads, base {env['base_params'] / 1e6:.1f}M params, "
            f"variants {variants}" + (f", skipped {skipped}" if skipped else ""))
        if not args.no_time:
            for v in variants:
                t0 = time.perf_counter()
                log(f"[bench] time {v}: warmup {plan['warmup']}, reps {plan['reps']} ...")
                results["time"][v] = bench_time(base_dir, v, inputs, plan["warmup"], plan["reps"])
                gc.collect()
                log(f"[bench] time {v}: done in {time.perf_counter() - t0:.0f}s")
        if not args.no_memory:
            log(f"[bench] memory: {mem_steps} steps per subprocess ...")
            results["memory"] = bench_memory(base_dir, variants, mem_steps, args.size, args.seed, args.threads)
    results["elapsed_s"] = time.perf_counter() - t_start
    results["contention"] = dict(bl.STATS)
    env["loadavg_end"] = os.getloadavg()
    results["goals"] = goals(results)

    print(f"sdk vs peft {env['peft']} training | torch {env['torch']} | transformers {env['transformers']} | "
          f"{env['threads']} threads on {env['cpu_count']} CPUs | sdk at {env['sdk_commit']} | {mode} run")
    print(f"Llama ({args.size}) {env['base_params'] / 1e6:.1f}M params; batch 4x128; adapters on q,k,v,o_proj; "
          "train step = forward+backward+AdamW(+AdaLoRA allocator); memory = train peak RSS over post-import RSS")
    print()
    print(report(results))
    print()
    for k, g in results["goals"].items():
        print(f"goal {k} sdk/peft <= {GOAL:.2f}: {g['value']:.3f} {'PASS' if g['pass'] else 'MISS'}")
    st = bl.STATS
    print(f"elapsed {results['elapsed_s']:.0f}s; load average {env['loadavg_start'][0]:.2f} -> "
          f"{env['loadavg_end'][0]:.2f}; timed rounds {st['rounds']}, noisy {st['noisy_rounds']}, "
          f"noisy kept {st['kept_noisy_rounds']}")
    if args.json:
        Path(args.json).write_text(json.dumps(bl._jsonable(results), indent=2, allow_nan=False) + "\n")
        log(f"[bench] wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
