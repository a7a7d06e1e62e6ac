"""Provenance records (``sdk.provenance``): the bounds the client and the registry share, dataset hashes,
and ``provenance.json`` next to saved adapters."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import sdk
from sdk.provenance import (
    check_provenance,
    dataset_sha256,
    metrics_problems,
    params_problems,
    provenance_problems,
    read_provenance,
    record_training,
    write_provenance,
)


@pytest.mark.parametrize(("metrics", "needle"), [
    ({"loss": math.nan}, "finite"), ({"loss": math.inf}, "finite"), ({"ok": True}, "number"),
    ({"loss": "low"}, "number"), ({"big": 1 << 60}, "2^53"), ({"bad key": 1.0}, "name"), ({"x" * 65: 1.0}, "name"),
    ({f"m{i}": 1.0 for i in range(65)}, "at most 64"), ([1.0], "object"),
])
def test_bad_metrics_are_named(metrics: object, needle: str) -> None:
    problems = metrics_problems(metrics)
    assert problems and needle in " ".join(problems)


@pytest.mark.parametrize(("params", "needle"), [
    ({"lr": [1, 2]}, "number"), ({"note": "x" * 257}, "256"), ({"note": "a\x00b"}, "control"),
    ({"note": "\ud800"}, "Unicode"), ({"lr": math.nan}, "finite"),
])
def test_bad_params_are_named(params: object, needle: str) -> None:
    problems = params_problems(params)
    assert problems and needle in " ".join(problems)


def test_good_records_pass_and_dataset_checks() -> None:
    record = {"metrics": {"eval/loss": 1.5, "steps": 3}, "params": {"lr": 2e-4, "optim": "adamw", "x": None,
                                                                    "flag": False},
              "dataset": {"name": "toy", "sha256": "0" * 64}}
    assert provenance_problems(record) == [] and check_provenance(record) == record
    assert provenance_problems({"dataset": {"name": "toy", "sha256": "XYZ"}})
    assert provenance_problems({"dataset": {"name": ""}})
    assert provenance_problems({"dataset": {"name": "x", "url": "y"}})
    assert provenance_problems({"other": {}})
    with pytest.raises(sdk.ConfigError, match="finite"):
        check_provenance({"metrics": {"loss": math.nan}})


def test_dataset_hash_follows_the_examples() -> None:
    data = [{"input_ids": torch.arange(5), "labels": torch.arange(5)} for _ in range(3)]
    same = [{"labels": torch.arange(5), "input_ids": torch.arange(5)} for _ in range(3)]
    other = [*data[:2], {"input_ids": torch.arange(1, 6), "labels": torch.arange(5)}]
    assert dataset_sha256(data) == dataset_sha256(same) != dataset_sha256(other)
    assert dataset_sha256(iter(data)) is None  # an iterator would be used up: not hashed
    assert dataset_sha256([{"x": object()}]) is None


def test_training_records_drop_what_is_out_of_bounds_and_save_with_the_adapter(tmp_path: Path) -> None:
    from _tiny import tiny_llama

    model = sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(r=2, target_modules=["q_proj"]))
    record_training(model, {"loss": 1.0, "bad": math.nan}, {"lr": 0.1, "weird": [1]}, {"name": "toy"})
    assert model.provenance["default"] == {"metrics": {"loss": 1.0}, "params": {"lr": 0.1},
                                           "dataset": {"name": "toy"}}
    model.save_pretrained(tmp_path)
    assert read_provenance(tmp_path) == model.provenance["default"]
    write_provenance(tmp_path, {"metrics": {"loss": 2.0}})
    assert read_provenance(tmp_path) == {"metrics": {"loss": 2.0}}
    (tmp_path / "provenance.json").write_text('{"metrics": {"loss": NaN}}')
    with pytest.raises(sdk.ConfigError, match="finite"):
        read_provenance(tmp_path)
