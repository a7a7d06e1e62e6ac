"""``transformers.Trainer`` with an ``AdapterModel``: adapter-only checkpoints in PEFT's format, resuming,
``load_best_model_at_end``, and the run's record (``model.provenance``) — a real Trainer on CPU, a tiny model.

The Trainer treats the model as a PEFT model (``sdk.integrations.peft_view``); these tests run with and
without ``AdapterTrainerCallback``, and with the Trainer's own defaults (``remove_unused_columns=True``,
no ``label_names``), which it can only get right by reading the base model's ``forward``.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
from pathlib import Path

import pytest
import torch
from _tiny import tiny_llama
from safetensors.torch import load_file

import sdk
from sdk.integrations.transformers import AdapterTrainerCallback


def examples(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 12, (10,), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


def lora_model(seed: int) -> sdk.AdapterModel:
    torch.manual_seed(seed)
    return sdk.get_peft_model(tiny_llama(0), sdk.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))


def args(out: Path, **overrides: object):
    from transformers import TrainingArguments

    kwargs = {
        "output_dir": str(out), "max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 2e-2,
        "use_cpu": True, "report_to": [], "disable_tqdm": True, "save_strategy": "steps", "save_steps": 2,
        "eval_strategy": "steps", "eval_steps": 2, "logging_steps": 1, "dataloader_num_workers": 0, "seed": 3,
    }
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def adapter_weights(model: sdk.AdapterModel) -> dict[str, torch.Tensor]:
    from sdk.formats import adapter_state_dict
    from sdk.methods import get_method

    config = model.peft_config["default"]
    live = adapter_state_dict(model.base_model, "default", config, get_method(config.peft_type).tuner)
    return {k: v.detach().clone() for k, v in live.items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("with_callback", [False, True])
def test_checkpoints_are_adapter_only_and_the_best_one_is_loaded_at_the_end(tmp_path: Path,
                                                                           with_callback: bool) -> None:
    from transformers import Trainer

    model = lora_model(1)
    data = examples(16)
    # greater_is_better=True on the loss: the *worst* evaluation (the first, at step 2) is "best", so that
    # loading it at the end visibly changes the weights the last step left
    trainer = Trainer(model=model, args=args(tmp_path / "run", load_best_model_at_end=True,
                                             metric_for_best_model="eval_loss", greater_is_better=True),
                      train_dataset=data, eval_dataset=data[:4],
                      callbacks=[AdapterTrainerCallback(dataset_name="toy")] if with_callback else None)
    assert trainer.label_names == ["labels"]  # read from LlamaForCausalLM.forward through get_base_model()
    trainer.train()
    for step in (2, 4):
        ckpt = tmp_path / "run" / f"checkpoint-{step}"
        files = {p.name for p in ckpt.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        assert not files & {"model.safetensors", "pytorch_model.bin", "adapter_model.bin"}
        saved = load_file(str(ckpt / "adapter_model.safetensors"))
        assert saved and all("lora_" in k for k in saved)
        assert json.loads((ckpt / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2")
    best = load_file(str(tmp_path / "run" / "checkpoint-2" / "adapter_model.safetensors"))
    last = load_file(str(tmp_path / "run" / "checkpoint-4" / "adapter_model.safetensors"))
    assert not same(best, last)
    assert same(adapter_weights(model), best)
    assert model.peft_config["default"].inference_mode is False  # still trainable after the reload
    trainer.save_model(str(tmp_path / "final"))
    assert not (tmp_path / "final" / "model.safetensors").exists()
    reloaded = sdk.AdapterModel.from_pretrained(tiny_llama(0), tmp_path / "final")
    assert same(adapter_weights(reloaded), best)
    if with_callback:
        record = model.provenance["default"]
        assert record["dataset"]["name"] == "toy" and len(record["dataset"]["sha256"]) == 64
        assert record["params"]["learning_rate"] == 2e-2 and record["params"]["trainer"] == "transformers.Trainer"
        assert "eval_loss" in record["metrics"] and record["metrics"]["train_steps"] == 4.0
        on_disk = json.loads((tmp_path / "run" / "checkpoint-4" / "provenance.json").read_text())
        assert on_disk["dataset"] == record["dataset"]
    else:
        assert model.provenance == {}


def test_resuming_from_a_checkpoint_continues_the_same_run(tmp_path: Path) -> None:
    from transformers import Trainer

    data = examples(24)
    straight = lora_model(1)
    Trainer(model=straight, args=args(tmp_path / "a", max_steps=6, eval_strategy="no"), train_dataset=data).train()
    resumed = lora_model(7)  # other initial adapter weights: only the checkpoint can make the runs agree
    assert not same(adapter_weights(resumed), adapter_weights(straight))
    trainer = Trainer(model=resumed, args=args(tmp_path / "b", max_steps=6, eval_strategy="no"), train_dataset=data)
    trainer.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-4"))
    assert trainer.state.global_step == 6
    assert same(adapter_weights(resumed), adapter_weights(straight))


def test_save_pretrained_takes_what_trainer_and_accelerate_pass(tmp_path: Path) -> None:
    model = lora_model(1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = next(k for k in state if "lora_A" in k)
    state[key] = torch.full_like(state[key], 0.5)  # e.g. gathered from shards: the given values are saved
    model.save_pretrained(tmp_path / "a", state_dict=state, is_main_process=True, safe_serialization=True,
                          save_embedding_layers="auto", max_shard_size="5GB", selected_adapters=["default"])
    saved = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert any(torch.equal(t, torch.full_like(t, 0.5)) for t in saved.values())
    model.save_pretrained(tmp_path / "b", is_main_process=False)
    assert not (tmp_path / "b").exists()
    with pytest.warns(UserWarning, match="safetensors only"):
        model.save_pretrained(tmp_path / "c", safe_serialization=False)
    assert {p.name for p in (tmp_path / "c").iterdir()} >= {"adapter_model.safetensors"}
    with pytest.raises(sdk.ConfigError, match="embedding"):
        model.save_pretrained(tmp_path / "d", save_embedding_layers=True)


def test_the_peft_view_is_for_transformers_only(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers.trainer_utils import _is_peft_model

    model = lora_model(1)
    assert _is_peft_model(model)  # what transformers sees
    assert not isinstance(model, PeftModel) and isinstance(model, sdk.AdapterModel)  # what everyone else sees
    assert type(model) is sdk.AdapterModel and model.__class__ is sdk.AdapterModel
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert type(clone) is sdk.AdapterModel and same(adapter_weights(clone), adapter_weights(model))
    buf = io.BytesIO()
    torch.save(model, buf)
    assert type(torch.load(io.BytesIO(buf.getvalue()), weights_only=False)) is sdk.AdapterModel
    with pytest.raises(sdk.AdapterStateError, match="another config"):
        other = sdk.get_peft_model(tiny_llama(0), sdk.LoraConfig(r=2, target_modules=["q_proj"]))
        other.save_pretrained(tmp_path / "r2")
        model.load_adapter(tmp_path / "r2", "default")
