"""Issue 19: the serving-compatibility report (sdk.serving_compat), one real PEFT adapter per verdict."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama
from peft import IA3Config, LoraConfig, get_peft_model

from sdk.serving_compat import facts_from_summary, matches, report_for_folder, serving_report

Y, N = "yes", "no"


def _save(tmp: Path, config: Any, make: Any = tiny_llama) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = get_peft_model(make(), config)
        model.save_pretrained(tmp / "ad")
    return tmp / "ad"


def lora(**kw: Any) -> LoraConfig:
    kw.setdefault("target_modules", ["q_proj", "v_proj"])
    kw.setdefault("r", 4)
    return LoraConfig(lora_alpha=8, init_lora_weights=False, **kw)


CASES = {
    # name: (config, model, {engine: verdict}, a phrase of one reason)
    "plain": (lora(), tiny_llama, {"vllm": Y, "sglang": Y, "tgi": Y, "llama.cpp": Y}, ("vllm", "--max-lora-rank 8")),
    "dora": (lora(use_dora=True), tiny_llama, {"vllm": N, "sglang": N, "tgi": N, "llama.cpp": N},
             ("vllm", "does not yet support DoRA")),
    "rank-600": (lora(r=600), tiny_llama, {"vllm": N, "sglang": Y, "tgi": Y, "llama.cpp": Y},
                 ("vllm", "above vLLM's largest --max-lora-rank (512)")),
    "lora-bias": (lora(lora_bias=True), tiny_llama, {"vllm": Y, "sglang": N, "tgi": N, "llama.cpp": N},
                  ("vllm", "--enable-lora-bias")),
    "modules-to-save": (lora(modules_to_save=["lm_head"]), tiny_llama,
                        {"vllm": N, "sglang": N, "tgi": N, "llama.cpp": N}, ("vllm", "modules_to_save")),
    "rslora": (lora(use_rslora=True), tiny_llama, {"vllm": Y, "sglang": N, "tgi": Y, "llama.cpp": N},
               ("llama.cpp", "√r")),
    "alpha-pattern": (lora(alpha_pattern={"v_proj": 3}), tiny_llama, {"vllm": N, "sglang": N, "tgi": N, "llama.cpp": N},
                      ("vllm", "own scale")),
    "rank-pattern": (lora(rank_pattern={"q_proj": 2}), tiny_llama, {"vllm": N, "sglang": N, "tgi": N, "llama.cpp": Y},
                     ("tgi", "one scale")),
    "embeddings": (lora(target_modules=["embed_tokens", "q_proj"]), tiny_llama,
                   {"vllm": Y, "sglang": Y, "tgi": N, "llama.cpp": Y}, ("tgi", "embeddings")),
    "gpt2": (lora(target_modules=["c_attn"], fan_in_fan_out=True), tiny_gpt2,
             {"vllm": Y, "sglang": N, "tgi": N, "llama.cpp": Y}, ("sglang", "no LoRA layer for c_attn")),
    "unknown-target": (lora(target_modules=["mlp.c_fc", "attn.c_proj", "lm_head"]), tiny_gpt2,
                       {"vllm": Y, "sglang": N, "tgi": N, "llama.cpp": Y}, ("llama.cpp", "tied")),
    "ia3": (IA3Config(target_modules=["q_proj", "down_proj"], feedforward_modules=["down_proj"]), tiny_llama,
            {"vllm": N, "sglang": N, "tgi": N, "llama.cpp": N}, ("sglang", "LoRA adapters only")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_adapter_per_verdict(tmp_path: Path, case: str) -> None:
    config, make, want, (engine, phrase) = CASES[case]
    report = report_for_folder(_save(tmp_path, config, make))
    got = {name: e["verdict"] for name, e in report["engines"].items()}
    assert got == want, report
    assert all(e["reason"] for e in report["engines"].values())
    shown = report["engines"][engine]["reason"] + " " + " ".join(report["engines"][engine]["requires"])
    assert phrase in shown, report["engines"][engine]
    assert report["serves"] == [name for name in ("vllm", "sglang", "tgi", "llama.cpp") if want[name] == Y]


def test_llama_cpp_names_mapped_targets_and_search_filters_match(tmp_path: Path) -> None:
    report = report_for_folder(_save(tmp_path, lora(r=12, target_modules=["q_proj", "down_proj"])))
    assert report["engines"]["llama.cpp"]["mapped"] == ["down_proj", "q_proj"]
    assert report["max_lora_rank"] == 16 and report["engines"]["vllm"]["requires"][1] == "--max-lora-rank 16"
    assert matches(report, ["vllm"], 16) and not matches(report, ["vllm"], 8) and matches(report, ["tgi"])
    dora = serving_report(facts_from_summary({"peft_type": "LORA", "use_dora": True, "r": 8},
                                             {"targets": ["q_proj"], "r": 8}))
    assert dora["serves"] == [] and not matches(dora, ["vllm"])
