"""Benchmark ``sdk`` LoRA against Hugging Face ``peft`` in one run, on CPU.

Model: a Llama-shaped ``LlamaForCausalLM`` built from a config with seeded random weights
(hidden 1024, intermediate 2816, 4 layers, 16 heads, vocab 8000, fp32); LoRA r=16, alpha=32 on
q_proj, k_proj, v_proj, o_proj. Both libraries get deep copies of the same base model, and the
peft adapters get the exact same A/B tensors as the sdk adapters.

Sections (each timed after warm-up in interleaved rounds whose order rotates every round, to
cancel drift; medians are reported):

1. ``forward``  unmerged forward, batch 4 x seq 128, eval mode, ``torch.inference_mode``
2. ``train``    forward + backward + AdamW step over the trainable parameters, batch 4 x seq 128,
                lora_dropout 0.0 (and 0.05 as an informational row, ``train_dropout``)
3. ``merged``   sdk after ``merge_adapter()`` vs the plain base model without adapter layers
                (two plain copies, averaged per round; their ratio is an A/A control); peft
                merged for information
4. ``mixed``    batch 64 x seq 1, 16 adapters a0..a15 (random non-zero B), adapter_names
                ``a{i % 16}`` per sample, eval mode; logits of sdk and peft must agree (atol 1e-4)
                before timing; throughput in samples/s

Rounds during which another process used the CPU (read from /proc) are left out and re-run.
Each goal's ratio comes with a 95% bootstrap interval over the rounds.

Usage::

    .venv/bin/python bench/bench_lora.py            # full run (about 3 minutes on 2 cores)
    .venv/bin/python bench/bench_lora.py --quick    # smoke test (< 1 minute)
    .venv/bin/python bench/bench_lora.py --json out.json
    .venv/bin/python bench/bench_lora.py --only mixed
    .venv/bin/python bench/bench_lora.py --device cuda   # the same on a GPU
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

warnings.filterwarnings("ignore")

import peft  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import sdk  # noqa: E402
from sdk.tuners.lora.layers import LoraLinear  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
R, ALPHA = 16, 32
N_MIXED_ADAPTERS = 16

GOALS = {
    # key: (description, metric key in results (its bootstrap interval is "<key>_ci95"), comparison, threshold)
    "forward": ("unmerged forward sdk/peft <= 1.00", "forward.ratio", "<=", 1.00),
    "train": ("train step sdk/peft <= 1.00", "train.ratio", "<=", 1.00),
    "merged": ("merged sdk/base <= 1.02", "merged.ratio_sdk_base", "<=", 1.02),
    "mixed": ("mixed-batch throughput sdk/peft >= 1.50", "mixed.speedup", ">=", 1.50),
}

SETTINGS = {
    # reps = timed repetitions per variant (interleaved); warmup per variant
    "full": {"forward": (4, 30), "train": (3, 30), "train_dropout": (2, 12), "merged": (4, 30), "mixed": (10, 150)},
    "quick": {"forward": (1, 3), "train": (1, 3), "train_dropout": (0, 0), "merged": (1, 3), "mixed": (2, 6)},
}


# --- helpers -------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def llama_config() -> LlamaConfig:
    return LlamaConfig(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=4,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=8000,
    )


def sdk_lora_layers(model: sdk.AdapterModel) -> dict[str, LoraLinear]:
    """sdk LoRA layers keyed by their path inside the transformers model."""
    return {p: m for p, m in model.base_model.named_modules() if isinstance(m, LoraLinear)}


def sync_peft_from_sdk(s: sdk.AdapterModel, p: peft.PeftModel, names: list[str]) -> int:
    """Copy every sdk A/B tensor into the matching peft layer; returns the number of layers."""
    inner = p.base_model.model  # the LlamaForCausalLM inside peft's LoraModel
    layers = sdk_lora_layers(s)
    with torch.no_grad():
        for path, layer in layers.items():
            target = inner.get_submodule(path)
            for n in names:
                target.lora_A[n].weight.copy_(layer.lora_A[n])
                target.lora_B[n].weight.copy_(layer.lora_B[n])
                assert target.scaling[n] == layer.scaling[n], (path, n, target.scaling[n], layer.scaling[n])
    return len(layers)


def make_pair(
    base: torch.nn.Module, names: list[str], dropout: float = 0.0, init: bool = True
) -> tuple[sdk.AdapterModel, peft.PeftModel]:
    """Fresh sdk and peft models on deep copies of ``base`` with identical adapters ``names``."""
    torch.manual_seed(1234)
    s = None
    for n in names:
        cfg = sdk.LoraConfig(
            r=R, lora_alpha=ALPHA, lora_dropout=dropout, target_modules=list(TARGETS), init_lora_weights=init
        )
        if s is None:
            s = sdk.get_peft_model(copy.deepcopy(base), cfg, adapter_name=n)
        else:
            s.add_adapter(n, cfg)
    p = None
    for n in names:
        cfg = peft.LoraConfig(
            r=R, lora_alpha=ALPHA, lora_dropout=dropout, target_modules=list(TARGETS), init_lora_weights=init
        )
        if p is None:
            p = peft.get_peft_model(copy.deepcopy(base), cfg, adapter_name=n)
        else:
            p.add_adapter(n, cfg)
    nlayers = sync_peft_from_sdk(s, p, names)
    assert nlayers == 4 * len(base.model.layers), nlayers
    s.set_adapter(names[0])
    p.set_adapter(names[0])
    return s, p


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy jiffies of the whole machine, jiffies of this process), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        busy = sum(v) - v[3] - v[4]  # all but idle and iowait
        return busy, int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def _foreign_share(before: tuple[int, int] | None, after: tuple[int, int] | None, wall: float) -> float:
    """CPU time other processes used during ``wall`` seconds, as a fraction of one core."""
    if before is None or after is None or wall <= 0:
        return 0.0
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    other = (after[0] - before[0]) - (after[1] - before[1])
    return max(other - 2, 0) / hz / wall  # 2 jiffies of slack for the 10 ms resolution


#: What ``time_interleaved`` reads: wall time, or (``--clock cpu`` in bench_compile) this process's CPU time,
#: which other processes on a shared machine disturb much less (use it with one thread).
CLOCK: Callable[[], float] = time.perf_counter
#: Where models and inputs live (``--device``); timed calls on CUDA are followed by a synchronize.
DEVICE = torch.device("cpu")


def time_interleaved(
    fns: dict[str, Callable[[], object]], warmup: int, reps: int, max_foreign: float = 0.10
) -> dict[str, list[float]]:
    """Run every fn ``warmup`` times, then ``reps`` rounds; the order rotates each round.

    A round during which other processes used more than ``max_foreign`` of a core (read from
    /proc on Linux) counts as noisy and is run again; at most ``(1 + RETRY_FACTOR) * reps``
    rounds are run in all. The result holds the clean rounds only when at least
    ``max(3, reps // 3)`` are clean, otherwise every round (reported as ``kept_noisy_rounds``).
    """
    keys = list(fns)
    for _ in range(warmup):
        for k in keys:
            fns[k]()
    clean: dict[str, list[float]] = {k: [] for k in keys}
    noisy: dict[str, list[float]] = {k: [] for k in keys}
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        i = 0
        while len(clean[keys[0]]) < reps and i < (1 + RETRY_FACTOR) * reps:
            order = keys[i % len(keys) :] + keys[: i % len(keys)]
            if (i // len(keys)) % 2:
                order = order[::-1]
            i += 1
            round_t: dict[str, float] = {}
            j0, w0 = _cpu_jiffies(), time.perf_counter()
            for k in order:
                t0 = CLOCK()
                fns[k]()
                if DEVICE.type == "cuda":
                    torch.cuda.synchronize(DEVICE)
                round_t[k] = CLOCK() - t0
            share = _foreign_share(j0, _cpu_jiffies(), time.perf_counter() - w0)
            dest = noisy if share > max_foreign else clean
            for k in keys:
                dest[k].append(round_t[k])
    finally:
        if gc_was:
            gc.enable()
    n_clean, n_noisy = len(clean[keys[0]]), len(noisy[keys[0]])
    STATS["rounds"] += n_clean + n_noisy
    STATS["noisy_rounds"] += n_noisy
    if n_clean >= max(3, reps // 3):
        return clean
    STATS["kept_noisy_rounds"] += n_noisy
    return {k: clean[k] + noisy[k] for k in keys}


STATS = {"rounds": 0, "noisy_rounds": 0, "kept_noisy_rounds": 0}
RETRY_FACTOR = 1


def summary(ts: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return {"median_s": statistics.median(ts), "p25_s": qs[0], "p75_s": qs[2], "min_s": min(ts), "n": len(ts)}


def ratio_ci(a: list[float], b: list[float], n: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of median(a)/median(b), resampling whole rounds (a_i, b_i) together."""
    if len(a) < 8:  # too few rounds for a meaningful interval
        return math.nan, math.nan
    rng = random.Random(0)
    k = len(a)
    stats = []
    for _ in range(n):
        idx = [rng.randrange(k) for _ in range(k)]
        stats.append(statistics.median(a[i] for i in idx) / statistics.median(b[i] for i in idx))
    stats.sort()
    lo = stats[int((1 - level) / 2 * n)]
    hi = stats[min(n - 1, int((1 + level) / 2 * n))]
    return lo, hi


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median of per-round ratios a_i/b_i (robust to slow drift)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


# --- sections ------------------------------------------------------------------------------


def bench_forward(base, inputs, warmup, reps) -> dict:
    s, p = make_pair(base, ["default"], init=False)  # non-zero B so outputs can be compared
    s.eval()
    p.eval()
    with torch.inference_mode():
        ls = s(input_ids=inputs, use_cache=False).logits
        lp = p(input_ids=inputs, use_cache=False).logits
        diff = (ls - lp).abs().max().item()
        times = time_interleaved(
            {
                "sdk": lambda: s(input_ids=inputs, use_cache=False),
                "peft": lambda: p(input_ids=inputs, use_cache=False),
            },
            warmup,
            reps,
        )
    return {
        "sdk": summary(times["sdk"]),
        "peft": summary(times["peft"]),
        "ratio": statistics.median(times["sdk"]) / statistics.median(times["peft"]),
        "ratio_ci95": ratio_ci(times["sdk"], times["peft"]),
        "paired_ratio": paired_ratio(times["sdk"], times["peft"]),
        "max_abs_logit_diff": diff,
        "times_s": times,
    }


def bench_train(base, inputs, warmup, reps, dropout) -> dict:
    s, p = make_pair(base, ["default"], dropout=dropout)
    s.train()
    p.train()
    steps = {}
    n_trainable = {}
    for name, m in (("sdk", s), ("peft", p)):
        params = [q for q in m.parameters() if q.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step(m=m, opt=opt):
            opt.zero_grad(set_to_none=True)
            out = m(input_ids=inputs, labels=inputs, use_cache=False)
            out.loss.backward()
            opt.step()

        steps[name] = step
        n_trainable[name] = sum(q.numel() for q in params)
    n_s, n_p = n_trainable["sdk"], n_trainable["peft"]
    assert n_s == n_p, f"trainable parameter counts differ: sdk {n_s} vs peft {n_p}"
    times = time_interleaved(steps, warmup, reps)
    return {
        "dropout": dropout,
        "trainable_params": n_s,
        "sdk": summary(times["sdk"]),
        "peft": summary(times["peft"]),
        "ratio": statistics.median(times["sdk"]) / statistics.median(times["peft"]),
        "ratio_ci95": ratio_ci(times["sdk"], times["peft"]),
        "paired_ratio": paired_ratio(times["sdk"], times["peft"]),
        "times_s": times,
    }


def bench_merged(base, inputs, warmup, reps) -> dict:
    s, p = make_pair(base, ["default"], init=False)
    plain = copy.deepcopy(base)
    plain2 = copy.deepcopy(base)  # a second plain copy: A/A control and part of the reference
    for m in (s, p, plain, plain2):
        m.eval()
    with torch.inference_mode():
        unmerged = s(input_ids=inputs, use_cache=False).logits
    s.merge_adapter()
    p.merge_adapter()
    with torch.inference_mode():
        ls = s(input_ids=inputs, use_cache=False).logits
        lp = p(input_ids=inputs, use_cache=False).logits
        diffs = {
            "sdk_merged_vs_unmerged": (ls - unmerged).abs().max().item(),
            "sdk_merged_vs_peft_merged": (ls - lp).abs().max().item(),
        }
        times = time_interleaved(
            {
                "sdk": lambda: s(input_ids=inputs, use_cache=False),
                "base": lambda: plain(input_ids=inputs, use_cache=False),
                "peft": lambda: p(input_ids=inputs, use_cache=False),
                "base_copy": lambda: plain2(input_ids=inputs, use_cache=False),
            },
            warmup,
            reps,
        )
    # The plain model is timed as two identical copies; their per-round mean is the reference, which
    # evens out how one particular copy happens to sit in memory (see "ratio_control").
    pooled = [(a + b) / 2 for a, b in zip(times["base"], times["base_copy"], strict=True)]
    med = {k: statistics.median(v) for k, v in times.items()}
    med["pooled"] = statistics.median(pooled)
    return {
        "sdk": summary(times["sdk"]),
        "base": summary(pooled),
        "peft": summary(times["peft"]),
        "ratio_sdk_base": med["sdk"] / med["pooled"],
        "ratio_sdk_base_ci95": ratio_ci(times["sdk"], pooled),
        "paired_ratio_sdk_base": paired_ratio(times["sdk"], pooled),
        "ratio_peft_base": med["peft"] / med["pooled"],
        "ratio_sdk_peft": med["sdk"] / med["peft"],
        "base_copy1": summary(times["base"]),
        "base_copy2": summary(times["base_copy"]),
        "ratio_control": med["base_copy"] / med["base"],
        "ratio_control_ci95": ratio_ci(times["base_copy"], times["base"]),
        "times_s": times,
        "max_abs_logit_diff": diffs,
    }


def bench_mixed(base, vocab, warmup, reps, batch=64) -> dict:
    names = [f"a{i}" for i in range(N_MIXED_ADAPTERS)]
    s, p = make_pair(base, names, init=False)
    plain = copy.deepcopy(base)
    for m in (s, p, plain):
        m.eval()
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (batch, 1), generator=g).to(DEVICE)
    per_sample = [f"a{i % N_MIXED_ADAPTERS}" for i in range(batch)]
    with torch.inference_mode():
        ls = s(input_ids=ids, adapter_names=per_sample, use_cache=False).logits
        lp = p(input_ids=ids, adapter_names=per_sample, use_cache=False).logits
        lb = plain(input_ids=ids, use_cache=False).logits
        diff = (ls - lp).abs().max().item()
        if not torch.allclose(ls, lp, atol=1e-4):
            raise AssertionError(f"mixed-batch logits differ between sdk and peft: max abs diff {diff:.3g}")
        adapters_matter = (ls - lb).abs().max().item()
        assert adapters_matter > 1e-3, "adapters do not change the logits; the check would be vacuous"
        times = time_interleaved(
            {
                "sdk": lambda: s(input_ids=ids, adapter_names=per_sample, use_cache=False),
                "peft": lambda: p(input_ids=ids, adapter_names=per_sample, use_cache=False),
                "base": lambda: plain(input_ids=ids, use_cache=False),
            },
            warmup,
            reps,
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "batch": batch,
        "adapters": N_MIXED_ADAPTERS,
        "sdk": summary(times["sdk"]),
        "peft": summary(times["peft"]),
        "base": summary(times["base"]),
        "sdk_samples_per_s": batch / med["sdk"],
        "peft_samples_per_s": batch / med["peft"],
        "base_samples_per_s": batch / med["base"],
        "ratio": med["sdk"] / med["peft"],
        "speedup": med["peft"] / med["sdk"],
        "speedup_ci95": ratio_ci(times["peft"], times["sdk"]),
        "speedup_ceiling": med["peft"] / med["base"],
        "paired_speedup": 1.0 / paired_ratio(times["sdk"], times["peft"]),
        "max_abs_logit_diff": diff,
        "max_abs_logit_diff_vs_base": adapters_matter,
        "times_s": times,
    }


# --- report --------------------------------------------------------------------------------


def lookup(results: dict, dotted: str) -> float:
    cur = results
    for part in dotted.split("."):
        cur = cur[part]
    return cur


def ms(x: float) -> str:
    return f"{x * 1e3:9.1f}"


def table(results: dict) -> str:
    head = f"| {'measurement':<44} | {'sdk':>9} | {'peft':>9} | {'base':>9} | {'ratio':>16} |"
    rows = [head, "|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|"]

    def row(label: str, sdk_v: str = "", peft_v: str = "", base_v: str = "", ratio: str = "") -> None:
        rows.append(f"| {label:<44} | {sdk_v:>9} | {peft_v:>9} | {base_v:>9} | {ratio:>16} |")

    def med(sec: dict, key: str) -> str:
        return ms(sec[key]["median_s"])

    if "forward" in results:
        f = results["forward"]
        row("1. unmerged forward, 4x128, ms", med(f, "sdk"), med(f, "peft"), "", f"sdk/peft {f['ratio']:.3f}")
    if "train" in results:
        t = results["train"]
        row("2. train step, 4x128, dropout 0.0, ms", med(t, "sdk"), med(t, "peft"), "", f"sdk/peft {t['ratio']:.3f}")
    if "train_dropout" in results:
        t = results["train_dropout"]
        row(
            f"2b. train step, dropout {t['dropout']}, ms (info)",
            med(t, "sdk"),
            med(t, "peft"),
            "",
            f"sdk/peft {t['ratio']:.3f}",
        )
    if "merged" in results:
        m = results["merged"]
        row(
            "3. merged forward, 4x128, ms",
            med(m, "sdk"),
            med(m, "peft"),
            med(m, "base"),
            f"sdk/base {m['ratio_sdk_base']:.3f}",
        )
        row("   (peft merged / base, info)", ratio=f"peft/base {m['ratio_peft_base']:.3f}")
        row(
            "   (A/A control: plain copy 2 / copy 1)",
            base_v=med(m, "base_copy2"),
            ratio=f"A/A {m['ratio_control']:.3f}",
        )
    if "mixed" in results:
        x = results["mixed"]
        row(
            f"4. mixed batch {x['batch']}x1, {x['adapters']} adapters, ms",
            med(x, "sdk"),
            med(x, "peft"),
            med(x, "base"),
            f"sdk/peft {x['ratio']:.3f}",
        )
        row(
            "   throughput, samples/s",
            f"{x['sdk_samples_per_s']:9.0f}",
            f"{x['peft_samples_per_s']:9.0f}",
            f"{x['base_samples_per_s']:9.0f}",
            f"speedup {x['speedup']:.2f}x",
        )
        row("   (ceiling if sdk adapters were free)", ratio=f"peft/base {x['speedup_ceiling']:.2f}x")
    return "\n".join(rows)


def goals_table(results: dict) -> tuple[str, dict]:
    """PASS/MISS on the median ratio; '(noise)' where the 95% interval includes the threshold."""
    lines = [
        f"| {'goal':<42} | {'value':>7} | {'95% interval':>15} | result        |",
        f"|{'-' * 44}|{'-' * 9}|{'-' * 17}|---------------|",
    ]
    verdict: dict = {}
    for key, (desc, metric, op, thr) in GOALS.items():
        if key not in results:
            continue
        v = lookup(results, metric)
        lo, hi = lookup(results, metric + "_ci95")
        ok = v <= thr if op == "<=" else v >= thr
        sure = not math.isnan(lo) and not (lo <= thr <= hi)
        verdict[key] = {
            "goal": desc,
            "value": v,
            "ci95": [lo, hi],
            "threshold": thr,
            "op": op,
            "pass": ok,
            "outside_noise": sure,
        }
        if math.isnan(lo):
            res, interval = ("PASS" if ok else "MISS") + " (few)", "n/a"
        else:
            res, interval = ("PASS" if ok else "MISS") + ("" if sure else " (noise)"), f"{lo:.3f} - {hi:.3f}"
        lines.append(f"| {desc:<42} | {v:7.3f} | {interval:>15} | {res:<13} |")
    return "\n".join(lines), verdict


def _git_describe() -> str | None:
    """Commit of the checkout, with '+dirty-sdk' when sdk/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sdk"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty-sdk" if dirty else "")


def _jsonable(obj: object) -> object:
    """``results`` with NaN turned into null (strict JSON) and tuples into lists."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions, for a smoke test (< 1 min)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument(
        "--retries",
        type=float,
        default=None,
        help="extra rounds allowed per section, as a multiple of its repetitions, to replace rounds "
        "disturbed by other processes (default 1, --quick 0)",
    )
    ap.add_argument(
        "--only",
        nargs="*",
        choices=["forward", "train", "train_dropout", "merged", "mixed"],
        help="run only these sections (goals of skipped sections are not evaluated)",
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    global RETRY_FACTOR, DEVICE
    DEVICE = torch.device(args.device)
    RETRY_FACTOR = args.retries if args.retries is not None else (0 if args.quick else 1)
    plan = SETTINGS[mode]
    sections = args.only or [k for k, (w, n) in plan.items() if n > 0]

    cfg = llama_config()
    torch.manual_seed(args.seed)
    base = LlamaForCausalLM(cfg).eval().to(DEVICE)
    for q in base.parameters():
        q.requires_grad_(False)
    g = torch.Generator().manual_seed(args.seed + 1)
    inputs = torch.randint(0, cfg.vocab_size, (4, 128), generator=g).to(DEVICE)

    env = {
        "mode": mode,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(DEVICE),
        "threads": torch.get_num_threads(),
        "attn_implementation": getattr(cfg, "_attn_implementation", None),
        "dtype": str(next(base.parameters()).dtype),
        "base_params": sum(q.numel() for q in base.parameters()),
        "loadavg_start": os.getloadavg(),
        "sdk_commit": _git_describe(),
    }
    log(
        f"[bench] {mode} run, torch {env['torch']}, {env['threads']} threads, "
        f"base model {env['base_params'] / 1e6:.1f}M params"
    )
    results: dict = {"env": env, "settings": {k: plan[k] for k in sections}}
    t_start = time.perf_counter()
    for sec in sections:
        warmup, reps = plan[sec]
        if args.only and reps == 0:
            warmup, reps = SETTINGS["full"][sec]
        t0 = time.perf_counter()
        log(f"[bench] {sec}: warmup {warmup}, reps {reps} ...")
        if sec == "forward":
            results[sec] = bench_forward(base, inputs, warmup, reps)
        elif sec == "train":
            results[sec] = bench_train(base, inputs, warmup, reps, dropout=0.0)
        elif sec == "train_dropout":
            results[sec] = bench_train(base, inputs, warmup, reps, dropout=0.05)
        elif sec == "merged":
            results[sec] = bench_merged(base, inputs, warmup, reps)
        elif sec == "mixed":
            results[sec] = bench_mixed(base, cfg.vocab_size, warmup, reps)
        gc.collect()
        log(f"[bench] {sec}: done in {time.perf_counter() - t0:.1f}s")
    results["elapsed_s"] = time.perf_counter() - t_start
    results["contention"] = dict(STATS)
    env["loadavg_end"] = os.getloadavg()

    print(
        f"sdk vs peft {env['peft']} | torch {env['torch']} | transformers {env['transformers']} | "
        f"{env['threads']} threads on {env['cpu_count']} CPUs | sdk at {env['sdk_commit']} | {mode} run"
    )
    print("Llama 1024/2816, 4 layers, 16 heads, vocab 8000, fp32; LoRA r=16 alpha=32 on q,k,v,o_proj")
    print()
    print(table(results))
    print()
    text, verdict = goals_table(results)
    print(text)
    print(
        "PASS/MISS compare the median ratio with the goal; '(noise)': the 95% bootstrap interval "
        "includes the goal; '(few)': too few repetitions for an interval (e.g. --quick)."
    )
    results["goals"] = verdict
    checks = []
    if "forward" in results:
        checks.append(f"unmerged logits |sdk-peft| max {results['forward']['max_abs_logit_diff']:.2e}")
    if "merged" in results:
        d = results["merged"]["max_abs_logit_diff"]
        checks.append(
            f"merged vs unmerged {d['sdk_merged_vs_unmerged']:.2e}, "
            f"sdk vs peft merged {d['sdk_merged_vs_peft_merged']:.2e}"
        )
    if "mixed" in results:
        checks.append(
            f"mixed-batch logits |sdk-peft| max {results['mixed']['max_abs_logit_diff']:.2e} (allclose atol 1e-4: ok)"
        )
    print()
    print("checks: " + "; ".join(checks))
    print(
        f"elapsed: {results['elapsed_s']:.0f}s; load average at start {env['loadavg_start'][0]:.2f}, "
        f"at end (1 min) {env['loadavg_end'][0]:.2f}"
    )
    print(
        f"timed rounds: {STATS['rounds']}, of which {STATS['noisy_rounds']} noisy (another process used the CPU; "
        f"left out where enough clean rounds remained); noisy rounds used anyway: {STATS['kept_noisy_rounds']}"
    )
    if STATS["kept_noisy_rounds"]:
        print(
            "warning: the machine was busy during the run; absolute times are unreliable "
            "(the interleaved ratios are less affected)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(_jsonable(results), indent=2, allow_nan=False) + "\n")
        log(f"[bench] wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
