"""The version summary the registry stores and the web UI shows, for every kind of method."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tiny import tiny_llama

import sdk
from sdk.safetensors_header import file_reader, read_header
from sdk.summary import summarize

CASES = {
    "lora": (sdk.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), 4, ["q_proj", "v_proj"]),
    "adalora": (sdk.AdaLoraConfig(init_r=6, target_r=2, total_step=10, target_modules=["k_proj"]), 6, ["k_proj"]),
    "ia3": (sdk.IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]), None,
            ["down_proj", "k_proj"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_summary_names_the_adapted_modules_and_rank(case: str, tmp_path: Path) -> None:
    config, rank, targets = CASES[case]
    model = sdk.get_peft_model(tiny_llama(), config)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    with open(weights, "rb") as f:
        header, problems = read_header(file_reader(f), weights.stat().st_size)
    assert header is not None and problems == []
    summary = summarize(config, header)
    assert summary["method"] == config.peft_type
    assert summary["targets"] == targets
    assert summary["modules"] == 2 * len(targets)  # tiny_llama has two layers
    assert summary["r"] == rank
    assert summary["parameters"] == sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)


def test_summary_of_a_prompt_adapter_gives_its_virtual_tokens(tmp_path: Path) -> None:
    config = sdk.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5)
    model = sdk.get_peft_model(tiny_llama(), config)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    with open(weights, "rb") as f:
        header, problems = read_header(file_reader(f), weights.stat().st_size)
    assert header is not None and problems == []
    summary = summarize(model.peft_config["default"], header)
    assert summary["num_virtual_tokens"] == 5 and summary["modules"] == 0 and summary["targets"] == []
