"""Per-method comparison of ``sdk`` and Hugging Face ``peft`` in one run, on CPU.

For each method (LoRA, DoRA, IA3, LoHa, LoKr, prompt tuning, prefix tuning) both libraries wrap deep copies of
one seeded Llama-shaped model built from a config; the peft adapter is loaded from the sdk adapter's files,
so both train exactly the same tensors. Reported per method:

- trainable parameters (sdk, peft; they must be equal),
- adapter file size (``adapter_model.safetensors`` written by each library),
- train step time: ``zero_grad``, forward with ``labels``, ``backward``, ``AdamW.step``; batch 4 x
  seq 64. Every variant is warmed up, then timed in interleaved rounds whose order rotates and
  reverses every round (GC off while timing); medians are reported with the sdk/peft ratio.

Usage::

    .venv/bin/python bench/bench_methods.py            # full run
    .venv/bin/python bench/bench_methods.py --quick    # smoke test
    .venv/bin/python bench/bench_methods.py --only ia3 loha --json out.json
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

warnings.filterwarnings("ignore")

import peft  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import sdk  # noqa: E402

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    # name: (peft_type, config kwargs given to both libraries)
    "lora": ("LORA", {"r": 16, "lora_alpha": 32, "target_modules": ATTN}),
    "dora": ("LORA", {"r": 16, "lora_alpha": 32, "target_modules": ATTN, "use_dora": True}),
    "ia3": ("IA3", {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}),
    "loha": ("LOHA", {"r": 8, "alpha": 16, "target_modules": ATTN}),
    "lokr": ("LOKR", {"r": 8, "alpha": 16, "target_modules": ATTN}),
    "prompt": ("PROMPT_TUNING", {"task_type": "CAUSAL_LM", "num_virtual_tokens": 16}),
    "prefix": ("PREFIX_TUNING", {"task_type": "CAUSAL_LM", "num_virtual_tokens": 16}),
}
SETTINGS = {"full": (30, 3), "quick": (2, 1)}  # (timed rounds, warm-up calls per variant)


def base_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=8, vocab_size=4000, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def build(name: str, base: torch.nn.Module, folder: Path) -> tuple[Any, Any]:
    """sdk and peft models of method ``name`` with identical (random, non-zero) adapter tensors."""
    peft_type, kwargs = METHODS[name]
    ours = sdk.get_peft_model(copy.deepcopy(base), sdk.get_method(peft_type).config_cls(**kwargs))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ours.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    ours.save_pretrained(folder / "sdk")
    if peft_type in ("PROMPT_TUNING", "PREFIX_TUNING"):
        # peft cannot load a prompt adapter as trainable: build one and give it the sdk's table
        from safetensors.torch import load_file

        theirs = peft.get_peft_model(copy.deepcopy(base), peft.get_peft_config({"peft_type": peft_type, **kwargs}))
        table = load_file(str(folder / "sdk" / "adapter_model.safetensors"))["prompt_embeddings"]
        with torch.no_grad():
            theirs.prompt_encoder["default"].embedding.weight.copy_(table)
    else:
        theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), folder / "sdk", is_trainable=True)
    theirs.save_pretrained(folder / "peft")
    return ours, theirs


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def train_step(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], None]:
    optim = torch.optim.AdamW(trainable(model), lr=1e-4)
    model.train()

    def step() -> None:
        optim.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        optim.step()

    return step


def time_interleaved(variants: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, one call of each per round, order rotating and reversing."""
    names = list(variants)
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            if r % 2:
                order.reverse()
            for n in order:
                t0 = time.perf_counter()
                variants[n]()
                times[n].append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="+", choices=list(METHODS))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rounds, warmup = SETTINGS["quick" if args.quick else "full"]
    base = base_model(0)
    ids = torch.randint(0, 4000, (4, 64), generator=torch.Generator().manual_seed(2))
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for name in args.only or list(METHODS):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            ours, theirs = build(name, base, folder)
            counts = (sum(p.numel() for p in trainable(ours)), sum(p.numel() for p in trainable(theirs)))
            sizes = tuple((folder / side / "adapter_model.safetensors").stat().st_size for side in ("sdk", "peft"))
            with torch.no_grad():
                ours.eval()
                theirs.eval()
                diff = (ours(input_ids=ids[:1]).logits - theirs(input_ids=ids[:1]).logits).abs().max().item()
            assert diff < 1e-4, f"{name}: sdk and peft disagree before timing (max |diff| {diff:.2e})"
            times = time_interleaved({"sdk": train_step(ours, ids), "peft": train_step(theirs, ids)}, rounds, warmup)
        med = {k: statistics.median(v) for k, v in times.items()}
        results[name] = {
            "trainable": {"sdk": counts[0], "peft": counts[1]},
            "file_bytes": {"sdk": sizes[0], "peft": sizes[1]},
            "train_ms": {k: v * 1e3 for k, v in med.items()},
            "train_ratio": med["sdk"] / med["peft"],
            "raw_s": times,
        }
        del ours, theirs
        gc.collect()
    elapsed = time.perf_counter() - started

    print(f"torch {torch.__version__}, peft {peft.__version__}, threads {args.threads}, rounds {rounds}, "
          f"{elapsed:.0f} s")
    print(f"| {'method':<6} | {'trainable sdk':>13} | {'trainable peft':>14} | {'file sdk, B':>11} | "
          f"{'file peft, B':>12} | {'train sdk, ms':>13} | {'train peft, ms':>14} | {'sdk/peft':>8} |")
    print("|" + "|".join("-" * w for w in (8, 15, 16, 13, 14, 15, 16, 10)) + "|")
    for name, r in results.items():
        print(f"| {name:<6} | {r['trainable']['sdk']:>13,} | {r['trainable']['peft']:>14,} | "
              f"{r['file_bytes']['sdk']:>11,} | {r['file_bytes']['peft']:>12,} | {r['train_ms']['sdk']:>13.1f} | "
              f"{r['train_ms']['peft']:>14.1f} | {r['train_ratio']:>8.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
