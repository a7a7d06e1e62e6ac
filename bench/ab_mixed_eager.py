"""Eager mixed batches, old vs new ``grouped_linear`` in one process: interleaved A/B against the plain base model.

Loads ``sdk/grouped.py`` as it was at a git revision (``--ref``, default ``main``) next to the working tree's, and
times, on ``bench_lora.py``'s model (hidden 1024, 4 layers, LoRA r=16 on q/k/v/o, 16 adapters ``a{i % 16}`` per
sample), the sdk forward with each implementation and the plain base model, in rotating interleaved rounds.
One process, one model, one set of weights: the machine's drift hits all three alike, which two processes run
one after the other cannot promise on a shared machine. The old module must work with the current ``Routing``
(``routing.pad`` is read as None if the field is gone: exact for mixes without padding, like the ones here).

    .venv/bin/python bench/ab_mixed_eager.py                       # 64x1 and 64x16, 2 threads, wall clock
    .venv/bin/python bench/ab_mixed_eager.py --shapes 64x1 --rounds 60
    .venv/bin/python bench/ab_mixed_eager.py --threads 1 --clock cpu   # process CPU time: steadier when busy
    .venv/bin/python bench/ab_mixed_eager.py --order shuffled   # the same names in a seeded random order
    .venv/bin/python bench/ab_mixed_eager.py --device cuda      # on a GPU (synchronised after every call)
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_lora as bl
from transformers import LlamaForCausalLM

import sdk
import sdk.grouped
import sdk.tuners.lora.layers as lora_layers


def grouped_at(ref: str) -> ModuleType:
    """``sdk/grouped.py`` at git revision ``ref``, importable beside the current one."""
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "show", f"{ref}:sdk/grouped.py"], cwd=root, check=True, capture_output=True,
                         text=True).stdout
    src = src.replace("from .", "from sdk.").replace("routing.pad", "getattr(routing, 'pad', None)")
    path = Path(tempfile.mkdtemp()) / "grouped_at_ref.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("grouped_at_ref", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["grouped_at_ref"] = module
    spec.loader.exec_module(module)
    return module


def adapter_order(batch: int, order: str) -> list[str]:
    """One adapter name per sample: taking turns (``a{i % 16}``, the benchmarks' order), in blocks, or the
    turns shuffled with a fixed seed."""
    n = bl.N_MIXED_ADAPTERS
    if order == "blocks":
        return [f"a{i * n // batch}" for i in range(batch)]
    names = [f"a{i % n}" for i in range(batch)]
    if order == "shuffled":
        names = [names[i] for i in torch.randperm(batch, generator=torch.Generator().manual_seed(3)).tolist()]
    return names


def time_shape(model: sdk.AdapterModel, base: torch.nn.Module, shape: str, old: Callable[..., torch.Tensor],
               new: Callable[..., torch.Tensor], rounds: int, clock: Callable[[], float], order: str = "turns"
               ) -> str:
    """Old, new and base interleaved at one ``BxS`` shape; one line of medians and ratios."""
    batch, seq = map(int, shape.split("x"))
    device = next(base.parameters()).device
    ids = torch.randint(0, base.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(7))
    ids = ids.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    names = adapter_order(batch, order)

    def sdk_with(fn: Callable[..., torch.Tensor]) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            lora_layers.grouped_linear = fn
            return model(input_ids=ids, adapter_names=names, use_cache=False).logits
        return call

    fns = {"old": sdk_with(old), "new": sdk_with(new), "base": lambda: base(input_ids=ids, use_cache=False).logits}
    rounds = rounds if seq == 1 else max(4, rounds // 4)
    times: dict[str, list[float]] = {k: [] for k in fns}
    try:
        with torch.inference_mode():
            diff = (fns["old"]() - fns["new"]()).abs().max().item()
            assert diff < 1e-4, f"old and new outputs differ by {diff}"
            for f in fns.values():
                f()
            keys = list(fns)
            for i in range(rounds):
                order = keys[i % 3:] + keys[:i % 3]
                for k in order[::-1] if (i // 3) % 2 else order:
                    sync()
                    t0 = clock()
                    fns[k]()
                    sync()
                    times[k].append(clock() - t0)
    finally:
        lora_layers.grouped_linear = new
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = statistics.median(x / y for x, y in zip(times["new"], times["old"], strict=True))
    return (f"{shape} ({rounds} rounds): ms old {med['old'] * 1e3:.1f}, new {med['new'] * 1e3:.1f}, "
            f"base {med['base'] * 1e3:.1f}; old/base {med['old'] / med['base']:.3f}, "
            f"new/base {med['new'] / med['base']:.3f}; paired new/old {paired:.3f}; max |old-new| {diff:.1e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default="main", help="git revision of the old sdk/grouped.py")
    ap.add_argument("--shapes", default="64x1,64x16", help="batch x sequence, comma-separated")
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds for 64x1 (a quarter of them for longer)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--order", choices=["turns", "blocks", "shuffled"], default="turns",
                    help="which sample uses which adapter (turns: a{i %% 16})")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    old, new = grouped_at(args.ref).grouped_linear, sdk.grouped.grouped_linear

    torch.manual_seed(0)
    cfg = bl.llama_config()
    base = LlamaForCausalLM(cfg).eval().to(args.device)
    for p in base.parameters():
        p.requires_grad_(False)
    model: sdk.AdapterModel | None = None
    torch.manual_seed(1234)
    for i in range(bl.N_MIXED_ADAPTERS):
        lora = sdk.LoraConfig(r=bl.R, lora_alpha=bl.ALPHA, target_modules=list(bl.TARGETS), init_lora_weights=False)
        if model is None:
            model = sdk.get_peft_model(copy.deepcopy(base), lora, adapter_name=f"a{i}")
        else:
            model.add_adapter(f"a{i}", lora)
    assert model is not None
    model.eval()

    for shape in args.shapes.split(","):
        print(time_shape(model, base, shape, old, new, args.rounds, clock, args.order) +
              f", {args.order}, {args.threads} threads, {args.clock} clock, old = {args.ref}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
