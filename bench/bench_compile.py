"""Benchmark ``sdk`` under ``torch.compile`` against Hugging Face ``peft`` in one run (CPU, or ``--device cuda``).

Model: a Llama-shaped ``LlamaForCausalLM`` built from a config with seeded random weights (hidden 512,
intermediate 1376, 2 layers, 8 heads, vocab 4000); LoRA r=16, alpha=32 on q_proj, k_proj, v_proj, o_proj.
Both libraries get deep copies of the same base model and the same A/B tensors.

Sections:

1. ``infer``   graphs and graph breaks (``torch._dynamo.explain``); compile time (the first call of
               ``torch.compile(model)``, caches off, sdk and peft alternating, after ``torch._dynamo.reset``);
               compiled forward, batch 4 x 128, eval, ``no_grad`` (eager forwards for information)
2. ``train``   the same for a training step: forward with labels, backward, AdamW step (the model is
               compiled, the optimizer is not); compile time = first step − median step
3. ``mixed``   on ``bench_lora.py``'s larger model (hidden 1024, intermediate 2816, 4 layers, vocab 8000),
               16 adapters with random non-zero B, ``adapter_names=[f"a{i % 16}"]`` per sample, batch 64 x 1
               and 64 x 16: sdk against the plain base model (no adapter layers), eager and compiled; peft
               eager for information. Logits must match peft's (and eager sdk's) before timing, and the
               compiled sdk model must serve a second mix (5 adapters, 8 base samples) with the same graph
               (graphs counted). Fewer rounds for 64 x 16, whose forward costs about 10x a 64 x 1 one.
               The floor: reading every layer's stacked adapter weights once (a ``sum`` each), timed in the
               same rounds, over the base forward: what the adapters' bytes alone cost on this machine
4. ``half``    bf16 and fp16 base models (adapters float32 in both libraries): logits against peft's and
               the forward time, eager and compiled
5. ``hotswap`` load one adapter, prepare for rank 16, compile, swap in three others (ranks 4/8/16, other
               alphas, one on q/v only): compilations counted for sdk and peft, outputs checked against
               each adapter loaded fresh; swap time

Timing: every variant warmed up, then interleaved rounds whose order rotates and reverses (``bench_lora``'s
``time_interleaved``: rounds disturbed by other processes are re-run); medians and sdk/peft ratios. Rounds per
section: ``SETTINGS`` (a full CPU run takes about 10 minutes on 2 quiet cores, the mixed section about 3; most
of it is inductor compiling, 16 compilations in all).

Usage::

    .venv/bin/python bench/bench_compile.py                     # full run, CPU
    .venv/bin/python bench/bench_compile.py --quick             # smoke test
    .venv/bin/python bench/bench_compile.py --device cuda       # the same on a GPU
    .venv/bin/python bench/bench_compile.py --only mixed half --json out.json
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

if "--inductor-cache" not in sys.argv:  # compile times are only comparable without warm caches
    os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import bench_lora as bl
import peft
import torch
import transformers
from peft.utils.hotswap import hotswap_adapter as peft_hotswap
from peft.utils.hotswap import prepare_model_for_compiled_hotswap as peft_prepare
from torch._dynamo.testing import CompileCounterWithBackend
from transformers import LlamaConfig, LlamaForCausalLM

import sdk

N_ADAPTERS = 16
SETTINGS: dict[str, dict[str, Any]] = {
    # section: (warm-up calls, timed rounds); mixed: the same per batch shape; compile: rounds of compile
    # timing per library. A 64 x 16 forward costs about 10x a 64 x 1 one: fewer rounds keep the section short.
    "full": {"infer": (2, 20), "train": (2, 12), "mixed": {"64x1": (2, 20), "64x16": (1, 6)}, "half": (1, 10),
             "compile": 2},
    "quick": {"infer": (1, 3), "train": (1, 3), "mixed": {"64x1": (1, 3), "64x16": (1, 2)}, "half": (1, 3),
              "compile": 1},
}
GOALS = [
    # (description, result path, op, threshold)
    ("sdk graph breaks (forward, train) = 0", "infer.sdk_breaks_total", "<=", 0),
    ("compiled forward sdk/peft <= 1.00", "infer.ratio_compiled", "<=", 1.00),
    ("compile time forward sdk/peft <= 1.00", "infer.ratio_compile_time", "<=", 1.00),
    ("compiled train step sdk/peft <= 1.00", "train.ratio_compiled", "<=", 1.00),
    ("compile time train sdk/peft <= 1.00", "train.ratio_compile_time", "<=", 1.00),
    ("mixed 64x1 eager sdk/base <= 1.05", "mixed.64x1.ratio_eager", "<=", 1.05),
    ("mixed 64x1 compiled sdk/base <= 1.05", "mixed.64x1.ratio_compiled", "<=", 1.05),
    ("mixed 64x16 eager sdk/base <= 1.05", "mixed.64x16.ratio_eager", "<=", 1.05),
    ("mixed 64x16 compiled sdk/base <= 1.05", "mixed.64x16.ratio_compiled", "<=", 1.05),
    ("mixed compiled graphs for two mixes = 1", "mixed.64x1.sdk_graphs", "<=", 1),
    ("bf16 eager sdk/peft <= 1.00", "half.bfloat16.ratio_eager", "<=", 1.00),
    ("bf16 compiled sdk/peft <= 1.00", "half.bfloat16.ratio_compiled", "<=", 1.00),
    ("fp16 eager sdk/peft <= 1.00", "half.float16.ratio_eager", "<=", 1.00),
    ("fp16 compiled sdk/peft <= 1.00", "half.float16.ratio_compiled", "<=", 1.00),
    ("hot-swap recompilations sdk = 0", "hotswap.sdk_recompiles", "<=", 0),
]


def llama_config() -> LlamaConfig:
    return LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=2, num_attention_heads=8,
                       num_key_value_heads=8, vocab_size=4000, max_position_embeddings=256)


class Env:
    """Device handling: inputs on the device, and a sync after each timed call on CUDA."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn: Callable[[], object]) -> Callable[[], None]:
        def call() -> None:
            fn()
            self.sync()

        return call

    def ids(self, batch: int, seq: int, vocab: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, vocab, (batch, seq), generator=g).to(self.device)


def graphs_and_breaks(model: torch.nn.Module, **inputs: Any) -> tuple[int, int]:
    torch._dynamo.reset()
    report = torch._dynamo.explain(model)(**inputs)
    return report.graph_count, report.graph_break_count


def first_call(env: Env, model: torch.nn.Module, call: Callable[[Callable[..., Any]], object]) -> tuple[float, Any]:
    """Seconds of the first call of a freshly compiled ``model`` (what compiling costs), and the compiled model."""
    torch._dynamo.reset()
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    call(compiled)
    env.sync()
    return time.perf_counter() - t0, compiled


def warm_inductor(env: Env) -> None:
    """Pay inductor's one-time start-up (imports, compiler checks) before anything is timed."""
    torch._dynamo.reset()
    lin = torch.nn.Linear(8, 8).to(env.device)
    torch.compile(lambda x: torch.relu(lin(x)).sum())(torch.randn(4, 8, device=env.device))
    env.sync()


def compile_rounds(env: Env, models: dict[str, torch.nn.Module], call: Callable[[Callable[..., Any]], object],
                   rounds: int) -> dict[str, list[float]]:
    """First-call seconds per library, alternating which library goes first."""
    warm_inductor(env)
    out: dict[str, list[float]] = {k: [] for k in models}
    keys = list(models)
    for r in range(rounds):
        for k in keys if r % 2 == 0 else keys[::-1]:
            seconds, _ = first_call(env, models[k], call)
            out[k].append(seconds)
            bl.log(f"[bench]   compile {k}: {seconds:.1f}s")
    return out


def both_compiled(models: dict[str, torch.nn.Module], call: Callable[[Callable[..., Any]], object]
                  ) -> dict[str, Callable[..., Any]]:
    """Compiled models that stay valid together (no reset between them), warmed by one call."""
    torch._dynamo.reset()
    compiled = {k: torch.compile(m) for k, m in models.items()}
    for c in compiled.values():
        call(c)
    return compiled


def ratio_block(times: dict[str, list[float]], a: str, b: str) -> dict[str, Any]:
    return {"ratio": statistics.median(times[a]) / statistics.median(times[b]),
            "ratio_ci95": bl.ratio_ci(times[a], times[b])}


# --- sections ------------------------------------------------------------------------------------


def bench_infer(env: Env, base: torch.nn.Module, ids: torch.Tensor, warmup: int, reps: int, rounds: int) -> dict:
    s, p = bl.make_pair(base, ["default"], init=False)
    s.eval()
    p.eval()
    models = {"sdk": s, "peft": p}

    def call(m: Callable[..., Any]) -> object:
        with torch.no_grad():
            return m(input_ids=ids, use_cache=False)

    with torch.no_grad():
        graphs = {k: graphs_and_breaks(m, input_ids=ids, use_cache=False) for k, m in models.items()}
    bl.log(f"[bench]   graphs/breaks {graphs}")
    compile_s = compile_rounds(env, models, call, rounds)
    compiled = both_compiled(models, call)
    with torch.no_grad():
        eager_logits = s(input_ids=ids, use_cache=False).logits
        got = {k: c(input_ids=ids, use_cache=False).logits for k, c in compiled.items()}
        diffs = {"sdk_compiled_vs_eager": (got["sdk"] - eager_logits).abs().max().item(),
                 "sdk_vs_peft_compiled": (got["sdk"] - got["peft"]).abs().max().item()}
        assert diffs["sdk_vs_peft_compiled"] < 1e-3 * max(1.0, eager_logits.abs().max().item()), diffs
        times = bl.time_interleaved({
            "sdk_compiled": env.timed(lambda: compiled["sdk"](input_ids=ids, use_cache=False)),
            "peft_compiled": env.timed(lambda: compiled["peft"](input_ids=ids, use_cache=False)),
            "sdk_eager": env.timed(lambda: s(input_ids=ids, use_cache=False)),
            "peft_eager": env.timed(lambda: p(input_ids=ids, use_cache=False)),
        }, warmup, reps)
    cmp = ratio_block(times, "sdk_compiled", "peft_compiled")
    return {
        "graphs": graphs, "sdk_breaks_total": graphs["sdk"][1],
        "compile_s": compile_s,
        "ratio_compile_time": statistics.median(compile_s["sdk"]) / statistics.median(compile_s["peft"]),
        "ratio_compile_time_ci95": (float("nan"), float("nan")),
        "ratio_compiled": cmp["ratio"], "ratio_compiled_ci95": cmp["ratio_ci95"],
        "ratio_eager": statistics.median(times["sdk_eager"]) / statistics.median(times["peft_eager"]),
        "times": {k: bl.summary(v) for k, v in times.items()}, "times_s": times, "max_abs_diff": diffs,
    }


def bench_train(env: Env, base: torch.nn.Module, ids: torch.Tensor, warmup: int, reps: int, rounds: int) -> dict:
    s, p = bl.make_pair(base, ["default"])
    s.train()
    p.train()
    models = {"sdk": s, "peft": p}
    opts = {k: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-4) for k, m in models.items()}
    assert {k: len(o.param_groups[0]["params"]) for k, o in opts.items()}["sdk"] == len(
        opts["peft"].param_groups[0]["params"])

    def stepper(key: str, m: Callable[..., Any]) -> Callable[[], None]:
        def step() -> None:
            opts[key].zero_grad(set_to_none=True)
            m(input_ids=ids, labels=ids, use_cache=False).loss.backward()
            opts[key].step()

        return step

    with torch.no_grad():
        graphs = {k: graphs_and_breaks(m, input_ids=ids, labels=ids, use_cache=False) for k, m in models.items()}
    bl.log(f"[bench]   graphs/breaks {graphs}")
    first: dict[str, list[float]] = {k: [] for k in models}
    warm_inductor(env)
    for r in range(rounds):
        for k in list(models) if r % 2 == 0 else list(models)[::-1]:
            seconds, _ = first_call(env, models[k], lambda c, k=k: stepper(k, c)())
            first[k].append(seconds)
            bl.log(f"[bench]   first train step {k}: {seconds:.1f}s")
    torch._dynamo.reset()
    compiled = {k: torch.compile(m) for k, m in models.items()}
    steps = {f"{k}_compiled": env.timed(stepper(k, c)) for k, c in compiled.items()}
    steps |= {f"{k}_eager": env.timed(stepper(k, m)) for k, m in models.items()}
    times = bl.time_interleaved(steps, warmup, reps)
    steady = {k: statistics.median(times[f"{k}_compiled"]) for k in models}
    compile_s = {k: [f - steady[k] for f in v] for k, v in first.items()}
    cmp = ratio_block(times, "sdk_compiled", "peft_compiled")
    return {
        "graphs": graphs, "first_step_s": first, "compile_s": compile_s,
        "ratio_compile_time": statistics.median(compile_s["sdk"]) / statistics.median(compile_s["peft"]),
        "ratio_compile_time_ci95": (float("nan"), float("nan")),
        "ratio_compiled": cmp["ratio"], "ratio_compiled_ci95": cmp["ratio_ci95"],
        "ratio_eager": statistics.median(times["sdk_eager"]) / statistics.median(times["peft_eager"]),
        "times": {k: bl.summary(v) for k, v in times.items()}, "times_s": times,
    }


def bench_mixed(env: Env, base: torch.nn.Module, vocab: int, plan: dict[str, tuple[int, int]]) -> dict:
    """Mixed batches of 16 adapters against the plain base model; ``plan`` maps "BxS" to (warm-up, rounds)."""
    names = [f"a{i}" for i in range(N_ADAPTERS)]
    s, p = bl.make_pair(base, names, init=False)
    plain = copy.deepcopy(base)
    for m in (s, p, plain):
        m.eval()
    out: dict[str, Any] = {}
    for shape, (warmup, reps) in plan.items():
        batch, seq = map(int, shape.split("x"))
        ids = env.ids(batch, seq, vocab, seed=7)
        per_sample = [f"a{i % N_ADAPTERS}" for i in range(batch)]
        other_mix = [f"a{i % 5}" for i in range(batch - 8)] + ["__base__"] * 8  # 5 groups, larger ones
        bl.log(f"[bench]   {shape}: {N_ADAPTERS} adapters, groups of {batch // N_ADAPTERS}; compiling sdk and base")
        torch._dynamo.reset()
        counter = CompileCounterWithBackend("inductor")
        cs, cb = torch.compile(s, backend=counter), torch.compile(plain)
        kw = {"input_ids": ids, "use_cache": False}
        with torch.no_grad():
            ls = s(adapter_names=per_sample, **kw).logits
            lp = p(adapter_names=per_sample, **kw).logits
            lb = plain(**kw).logits
            t0 = time.perf_counter()
            lc = cs(adapter_names=per_sample, **kw).logits
            env.sync()
            compile_sdk = time.perf_counter() - t0
            cb(**kw)
            # another mix of the same shape (other groups, base samples): the compiled graph must serve it as is
            other = (cs(adapter_names=other_mix, **kw).logits - s(adapter_names=other_mix, **kw).logits).abs().max()
            diffs = {"sdk_vs_peft": (ls - lp).abs().max().item(), "compiled_vs_eager": (lc - ls).abs().max().item(),
                     "compiled_vs_eager_other_mix": other.item(), "sdk_vs_base": (ls - lb).abs().max().item()}
            assert diffs["sdk_vs_peft"] < 1e-4 and diffs["compiled_vs_eager"] < 1e-3, diffs
            assert diffs["compiled_vs_eager_other_mix"] < 1e-3, diffs
            assert diffs["sdk_vs_base"] > 1e-3, "the adapters change nothing: the comparison would be vacuous"
            bl.log(f"[bench]   {shape}: sdk compiled in {compile_sdk:.0f}s, graphs {counter.frame_count}; "
                   f"timing sdk/base eager and compiled, peft eager: {warmup} warm-up, {reps} rounds")
            s(adapter_names=per_sample, **kw)  # the stacks of this mix, not of the other one just run
            stacks = mix_stacks(s)
            times = bl.time_interleaved({
                "adapter_read": env.timed(partial(read_all, stacks)),
                "sdk_eager": env.timed(partial(s, adapter_names=per_sample, **kw)),
                "base_eager": env.timed(partial(plain, **kw)),
                "sdk_compiled": env.timed(partial(cs, adapter_names=per_sample, **kw)),
                "base_compiled": env.timed(partial(cb, **kw)),
                "peft_eager": env.timed(partial(p, adapter_names=per_sample, **kw)),
            }, warmup, reps)
        eager, comp = ratio_block(times, "sdk_eager", "base_eager"), ratio_block(times, "sdk_compiled", "base_compiled")
        read = statistics.median(times["adapter_read"])
        floor = {"adapter_bytes": sum(t.numel() * t.element_size() for t in stacks),
                 "base_bytes": sum(q.numel() * q.element_size() for q in plain.parameters()),
                 "read_ms": read * 1e3,
                 "eager": 1 + read / statistics.median(times["base_eager"]),
                 "compiled": 1 + read / statistics.median(times["base_compiled"])}
        out[shape] = {
            "ratio_eager": eager["ratio"], "ratio_eager_ci95": eager["ratio_ci95"],
            "ratio_compiled": comp["ratio"], "ratio_compiled_ci95": comp["ratio_ci95"],
            "ratio_peft_base": statistics.median(times["peft_eager"]) / statistics.median(times["base_eager"]),
            "sdk_graphs": counter.frame_count, "sdk_compile_s": compile_sdk, "floor": floor,
            "times": {k: bl.summary(v) for k, v in times.items()}, "times_s": times, "max_abs_diff": diffs,
        }
        bl.log(f"[bench]   {shape}: sdk/base eager {eager['ratio']:.3f}, compiled {comp['ratio']:.3f}; "
               f"reading the adapters' weights alone: {floor['eager']:.3f} and {floor['compiled']:.3f}")
    return out


def mix_stacks(model: sdk.AdapterModel) -> list[torch.Tensor]:
    """The stacked adapter weights the last mixed batch's grouped matmuls read (every layer's A and B)."""
    from sdk.grouped import GroupedLayer

    out: list[torch.Tensor] = []
    for m in model.modules():
        w = m._mix_cache.mix.value if isinstance(m, GroupedLayer) else None
        if w is not None:
            out += [t for t in (w.a, w.b, w.dora) if t is not None]
    assert out, "no grouped layer holds a stack: run a mixed batch first"
    return out


def read_all(tensors: list[torch.Tensor]) -> None:
    """Read every byte of ``tensors`` once (a sum each): what the adapters' matmuls cannot do with less."""
    for t in tensors:
        t.sum()


def bench_half(env: Env, base: torch.nn.Module, ids: torch.Tensor, warmup: int, reps: int, compiled_too: bool
               ) -> dict:
    out: dict[str, Any] = {}
    for dtype in (torch.bfloat16, torch.float16):
        s, p = bl.make_pair(copy.deepcopy(base).to(dtype), ["default"], init=False)
        s.eval()
        p.eval()
        kinds = {n: {q.dtype for k, q in m.named_parameters() if "lora_" in k} for n, m in (("sdk", s), ("peft", p))}
        variants: dict[str, Callable[[], None]] = {
            "sdk_eager": env.timed(lambda s=s: s(input_ids=ids, use_cache=False)),
            "peft_eager": env.timed(lambda p=p: p(input_ids=ids, use_cache=False)),
        }
        with torch.no_grad():
            ls, lp = s(input_ids=ids, use_cache=False).logits, p(input_ids=ids, use_cache=False).logits
            diffs = {"sdk_vs_peft_eager": (ls.float() - lp.float()).abs().max().item()}
            if compiled_too:
                compiled = both_compiled({"sdk": s, "peft": p}, lambda c: c(input_ids=ids, use_cache=False))
                lc = compiled["sdk"](input_ids=ids, use_cache=False).logits
                diffs["sdk_compiled_vs_eager"] = (lc.float() - ls.float()).abs().max().item()
                variants["sdk_compiled"] = env.timed(lambda c=compiled["sdk"]: c(input_ids=ids, use_cache=False))
                variants["peft_compiled"] = env.timed(lambda c=compiled["peft"]: c(input_ids=ids, use_cache=False))
            times = bl.time_interleaved(variants, warmup, reps)
        entry: dict[str, Any] = {"adapter_dtypes": {k: sorted(map(str, v)) for k, v in kinds.items()},
                                 "exact_match_peft": bool(torch.equal(ls, lp)), "max_abs_diff": diffs,
                                 "times": {k: bl.summary(v) for k, v in times.items()}, "times_s": times}
        for mode in ("eager", "compiled") if compiled_too else ("eager",):
            block = ratio_block(times, f"sdk_{mode}", f"peft_{mode}")
            entry[f"ratio_{mode}"], entry[f"ratio_{mode}_ci95"] = block["ratio"], block["ratio_ci95"]
        out[str(dtype).removeprefix("torch.")] = entry
        bl.log(f"[bench]   {dtype}: {diffs}, exact={entry['exact_match_peft']}")
    return out


def bench_hotswap(env: Env, base: torch.nn.Module, ids: torch.Tensor) -> dict:
    specs = [({"r": 8, "lora_alpha": 16}, bl.TARGETS), ({"r": 4, "lora_alpha": 32}, bl.TARGETS),
             ({"r": 16, "lora_alpha": 8}, bl.TARGETS), ({"r": 8, "lora_alpha": 8}, ["q_proj", "v_proj"])]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for i, (kw, targets) in enumerate(specs):
            torch.manual_seed(100 + i)
            m = sdk.get_peft_model(copy.deepcopy(base), sdk.LoraConfig(target_modules=targets,
                                                                       init_lora_weights=False, **kw))
            folders.append(Path(tmp) / f"a{i}")
            m.save_pretrained(folders[-1])
        fresh = []
        with torch.no_grad():
            for f in folders:
                loaded = sdk.AdapterModel.from_pretrained(copy.deepcopy(base), f)
                fresh.append(loaded(input_ids=ids, use_cache=False).logits)
        for lib in ("sdk", "peft"):
            if lib == "sdk":
                model = sdk.AdapterModel.from_pretrained(copy.deepcopy(base), folders[0])
                sdk.prepare_model_for_compiled_hotswap(model, target_rank=16)
            else:
                model = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(folders[0])).eval()
                peft_prepare(model, target_rank=16)
            counter = CompileCounterWithBackend("inductor")
            torch._dynamo.reset()
            compiled = torch.compile(model, backend=counter)
            swaps, diffs = [], []
            with torch.no_grad():
                compiled(input_ids=ids, use_cache=False)
                for f, want in zip(folders[1:], fresh[1:], strict=True):
                    t0 = time.perf_counter()
                    if lib == "sdk":
                        sdk.hotswap_adapter(compiled, f)
                    else:
                        peft_hotswap(compiled, str(f), adapter_name="default", torch_device=str(env.device))
                    env.sync()
                    swaps.append(time.perf_counter() - t0)
                    diffs.append((compiled(input_ids=ids, use_cache=False).logits - want).abs().max().item())
            out[f"{lib}_recompiles"] = counter.frame_count - 1
            out[f"{lib}_swap_ms"] = [1e3 * x for x in swaps]
            out[f"{lib}_max_abs_diff_vs_fresh"] = max(diffs)
            bl.log(f"[bench]   {lib}: recompiles {counter.frame_count - 1}, diffs {diffs}")
    return out


# --- report ---------------------------------------------------------------------------------------


def lookup(results: dict, dotted: str) -> Any:
    cur: Any = results
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def ms(x: float) -> str:
    return f"{x * 1e3:9.2f}"


def report(results: dict) -> str:
    lines = []
    for sec in ("infer", "train"):
        r = results.get(sec)
        if not r:
            continue
        t = r["times"]
        lines.append(f"{sec}: graphs/breaks sdk {r['graphs']['sdk']}, peft {r['graphs']['peft']}")
        key = "compile_s"
        lines.append(f"  compile s: sdk {statistics.median(r[key]['sdk']):.1f}, peft "
                     f"{statistics.median(r[key]['peft']):.1f}  (sdk/peft {r['ratio_compile_time']:.3f})")
        lines.append(f"  compiled ms: sdk {ms(t['sdk_compiled']['median_s'])}, "
                     f"peft {ms(t['peft_compiled']['median_s'])}  (sdk/peft {r['ratio_compiled']:.3f})")
        lines.append(f"  eager ms: sdk {ms(t['sdk_eager']['median_s'])}, "
                     f"peft {ms(t['peft_eager']['median_s'])}  (sdk/peft {r['ratio_eager']:.3f})")
    for shape, r in (results.get("mixed") or {}).items():
        t = r["times"]
        lines.append(f"mixed {shape}, {N_ADAPTERS} adapters ({r['sdk_graphs']} compiled graph(s) for two mixes): "
                     f"eager ms sdk {ms(t['sdk_eager']['median_s'])}, base "
                     f"{ms(t['base_eager']['median_s'])} (sdk/base {r['ratio_eager']:.3f}; peft/base "
                     f"{r['ratio_peft_base']:.3f}); compiled ms sdk {ms(t['sdk_compiled']['median_s'])}, base "
                     f"{ms(t['base_compiled']['median_s'])} (sdk/base {r['ratio_compiled']:.3f})")
        f = r.get("floor")
        if f:
            lines.append(f"  floor: the adapters' weights ({f['adapter_bytes'] / 2**20:.1f} MiB, "
                         f"{f['adapter_bytes'] / f['base_bytes']:.1%} of the base model's) take {f['read_ms']:.2f} ms "
                         f"to read once: sdk/base >= {f['eager']:.3f} eager and {f['compiled']:.3f} compiled here "
                         "for any kernel that does not overlap that read with the base model's matmuls")
    for dtype, r in (results.get("half") or {}).items():
        t = r["times"]
        line = (f"{dtype}: adapters {r['adapter_dtypes']}, logits equal peft's: {r['exact_match_peft']} "
                f"(max |Δ| {r['max_abs_diff']['sdk_vs_peft_eager']:.2e}); "
                f"eager ms sdk {ms(t['sdk_eager']['median_s'])}, peft {ms(t['peft_eager']['median_s'])} "
                f"(sdk/peft {r['ratio_eager']:.3f})")
        if "ratio_compiled" in r:
            line += (f"; compiled ms sdk {ms(t['sdk_compiled']['median_s'])}, peft "
                     f"{ms(t['peft_compiled']['median_s'])} (sdk/peft {r['ratio_compiled']:.3f})")
        lines.append(line)
    h = results.get("hotswap")
    if h:
        lines.append(f"hotswap: recompilations sdk {h['sdk_recompiles']}, peft {h['peft_recompiles']}; swap ms sdk "
                     f"{[round(x, 1) for x in h['sdk_swap_ms']]}, peft {[round(x, 1) for x in h['peft_swap_ms']]}; "
                     f"max |Δ| vs fresh sdk {h['sdk_max_abs_diff_vs_fresh']:.1e}, "
                     f"peft {h['peft_max_abs_diff_vs_fresh']:.1e}")
    lines.append("")
    lines.append(f"| {'goal':<40} | {'value':>7} | {'95% interval':>15} | result |")
    lines.append(f"|{'-' * 42}|{'-' * 9}|{'-' * 17}|--------|")
    for desc, path, op, thr in GOALS:
        v = lookup(results, path)
        if v is None:
            continue
        ci = lookup(results, path + "_ci95")
        ok = v <= thr if op == "<=" else v >= thr
        interval = "n/a" if not ci or ci[0] != ci[0] else f"{ci[0]:.3f} - {ci[1]:.3f}"
        lines.append(f"| {desc:<40} | {v:7.3f} | {interval:>15} | {'PASS' if ok else 'MISS':<6} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--quick", action="store_true", help="few repetitions, for a smoke test")
    ap.add_argument("--only", nargs="*", choices=["infer", "train", "mixed", "half", "hotswap"])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--compile-rounds", type=int, default=None, help="compile timings per library")
    ap.add_argument("--half-eager-only", action="store_true", help="skip compiling the bf16/fp16 models")
    ap.add_argument("--inductor-cache", action="store_true", help="keep inductor's caches on (compile times shrink)")
    ap.add_argument("--retries", type=float, default=None)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: time this process's CPU time (steadier on a shared machine; use with --threads 1)")
    args = ap.parse_args(argv)
    if args.clock == "cpu":
        bl.CLOCK = time.process_time

    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    plan = SETTINGS[mode]
    bl.RETRY_FACTOR = args.retries if args.retries is not None else (0 if args.quick else 1)
    rounds = args.compile_rounds or plan["compile"]
    env = Env(args.device)
    bl.DEVICE = env.device
    cfg = llama_config()
    torch.manual_seed(0)
    base = LlamaForCausalLM(cfg).eval().to(env.device)
    for q in base.parameters():
        q.requires_grad_(False)
    ids = env.ids(4, 128, cfg.vocab_size, seed=1)
    sections = args.only or ["infer", "train", "mixed", "half", "hotswap"]
    meta = {"mode": mode, "device": str(env.device), "torch": torch.__version__, "peft": peft.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "sdk_commit": bl._git_describe(),
            "loadavg_start": os.getloadavg(), "inductor_caches": "on" if args.inductor_cache else "off",
            "clock": args.clock,
            "gpu": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else None}
    bl.log(f"[bench] {mode} run on {meta['device']}, torch {meta['torch']}, {meta['threads']} threads")
    results: dict[str, Any] = {"env": meta}
    t_start = time.perf_counter()
    for sec in sections:
        t0 = time.perf_counter()
        bl.log(f"[bench] {sec} ...")
        if sec == "infer":
            results[sec] = bench_infer(env, base, ids, *plan["infer"], rounds)
        elif sec == "train":
            results[sec] = bench_train(env, base, ids, *plan["train"], rounds)
        elif sec == "mixed":  # on bench_lora's larger model, where the issue measured mixed batches
            torch.manual_seed(0)
            big = bl.llama_config()
            mixed_base = LlamaForCausalLM(big).eval().to(env.device)
            for q in mixed_base.parameters():
                q.requires_grad_(False)
            results[sec] = bench_mixed(env, mixed_base, big.vocab_size, plan["mixed"])
            del mixed_base
        elif sec == "half":
            results[sec] = bench_half(env, base, ids, *plan["half"], compiled_too=not args.half_eager_only)
        elif sec == "hotswap":
            results[sec] = bench_hotswap(env, base, ids)
        gc.collect()
        bl.log(f"[bench] {sec}: {time.perf_counter() - t0:.0f}s")
    if "infer" in results and "train" in results:
        results["infer"]["sdk_breaks_total"] += results["train"]["graphs"]["sdk"][1]
    results["elapsed_s"] = time.perf_counter() - t_start
    results["contention"] = dict(bl.STATS)
    meta["loadavg_end"] = os.getloadavg()
    print(f"sdk vs peft {meta['peft']} | torch {meta['torch']} | {meta['device']}"
          f"{' (' + meta['gpu'] + ')' if meta['gpu'] else ''} | {meta['threads']} threads on {meta['cpu_count']} "
          f"CPUs | sdk at {meta['sdk_commit']} | {mode} run | inductor caches {meta['inductor_caches']} | "
          f"{meta['clock']} clock")
    print("Llama 512/1376, 2 layers, 8 heads, vocab 4000; LoRA r=16 alpha=32 on q,k,v,o_proj; batch 4x128")
    print()
    print(report(results))
    print()
    print(f"elapsed {results['elapsed_s']:.0f}s; load average {meta['loadavg_start'][0]:.2f} at start, "
          f"{meta['loadavg_end'][0]:.2f} at end; timed rounds {bl.STATS['rounds']}, noisy {bl.STATS['noisy_rounds']}"
          f", noisy kept {bl.STATS['kept_noisy_rounds']}")
    if args.json:
        Path(args.json).write_text(json.dumps(bl._jsonable(results), indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
