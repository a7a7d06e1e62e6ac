"""The training helper (``sdk.train`` / ``sdk.Trainer``) and its ``transformers.Trainer`` callback."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _tiny import ConvNet, tiny_llama
from torch.utils.data import DataLoader, IterableDataset

import sdk
from sdk.training import lr_lambda


def lm_examples(n: int = 16, seq: int = 10, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Token sequences from a small vocabulary (easy to fit), labels = inputs (causal LM)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 12, (seq,), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


def lora_llama(seed: int = 0, cls: type[sdk.AdapterModel] = sdk.AdapterModel, **lora: object) -> sdk.AdapterModel:
    torch.manual_seed(seed + 1)
    config = sdk.LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **lora})
    return cls(tiny_llama(seed), config)


def lora_state(model: sdk.AdapterModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class RecordingModel(sdk.AdapterModel):
    """An AdapterModel that records the steps it is called with and whether gradients existed then."""

    def on_step_end(self, global_step: int) -> None:
        grads = [p.grad for p in self.parameters() if p.requires_grad]
        self.__dict__.setdefault("calls", []).append((global_step, all(g is not None for g in grads)))
        super().on_step_end(global_step)


# --- collate ---------------------------------------------------------------------------------


def test_collate_pads_each_key_with_its_own_value() -> None:
    batch = sdk.collate_batch(
        [
            {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [5, 6, 7], "score": 1.5},
            {"input_ids": torch.tensor([8]), "attention_mask": torch.tensor([1]), "labels": [8], "score": 0.5},
        ],
        pad_token_id=2,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]
    assert batch["score"].tolist() == [1.5, 0.5]


def test_collate_names_missing_keys_and_incompatible_shapes() -> None:
    with pytest.raises(sdk.ConfigError, match="example 1 has no 'labels'"):
        sdk.collate_batch([{"input_ids": [1], "labels": [1]}, {"input_ids": [2]}])
    with pytest.raises(sdk.ConfigError, match="cannot batch 'x'"):
        sdk.collate_batch([{"x": torch.zeros(2, 3)}, {"x": torch.zeros(2, 4)}])
    with pytest.raises(sdk.ConfigError, match="must be dicts"):
        sdk.collate_batch([[1, 2, 3]])  # type: ignore[list-item]


# --- the loop ----------------------------------------------------------------------------------


def test_training_lowers_the_loss_and_touches_only_the_adapter() -> None:
    model = lora_llama().eval()
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_before = lora_state(model)
    data = lm_examples(8)
    result = sdk.train(model, data, max_steps=30, batch_size=4, learning_rate=2e-2, progress=False)
    assert result.global_step == 30 and len(result.loss_history) == 30
    # a random tiny Llama has a frozen lm_head with small weights, so the loss can only fall a little
    assert sum(result.loss_history[-5:]) / 5 < sum(result.loss_history[:5]) / 5 - 0.05
    assert result.samples == 30 * 4 and result.tokens == 30 * 4 * 10
    assert result.epochs == pytest.approx(15.0) and result.train_runtime_s > 0 and result.tokens_per_s > 0
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, base_before[n]), n
    assert any(not torch.equal(p, lora_before[n]) for n, p in lora_state(model).items())
    assert not model.training  # back in the mode it had before


def test_learning_rate_warms_up_then_decays_linearly() -> None:
    result = sdk.train(
        lora_llama(), lm_examples(8), max_steps=6, batch_size=4, learning_rate=1.0, warmup_steps=2, progress=False
    )
    expected = [1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25]
    assert result.lr_history == pytest.approx(expected)
    constant = lr_lambda(sdk.TrainingConfig(lr_scheduler="constant", warmup_ratio=0.5), total=4)
    assert [constant(s) for s in range(4)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])


def test_gradient_accumulation_matches_one_big_batch() -> None:
    data = lm_examples(8)
    common = {"max_steps": 4, "learning_rate": 1e-2, "shuffle": False, "progress": False, "max_grad_norm": None}
    big, small = lora_llama(), lora_llama()
    r_big = sdk.train(big, data, batch_size=4, **common)
    r_small = sdk.train(small, data, batch_size=2, gradient_accumulation_steps=2, **common)
    assert r_small.loss_history == pytest.approx(r_big.loss_history, rel=1e-5)
    for (n, a), b in zip(lora_state(big).items(), lora_state(small).values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=n)


def test_epochs_count_optimizer_steps_with_a_short_last_group() -> None:
    # 10 examples / batch 4 -> 3 batches per epoch; accumulation 2 -> groups of 2 and 1 -> 2 steps per epoch
    model = RecordingModel(tiny_llama(), sdk.LoraConfig(r=2, target_modules=["q_proj"]))
    result = sdk.train(model, lm_examples(10), epochs=2, batch_size=4, gradient_accumulation_steps=2, progress=False)
    assert result.global_step == 4 and result.epochs == 2.0 and result.samples == 20
    assert [s for s, _ in model.calls] == [0, 1, 2, 3]


def test_step_hook_gets_zero_based_steps_while_gradients_exist() -> None:
    model = lora_llama(cls=RecordingModel)
    sdk.train(model, lm_examples(8), max_steps=5, batch_size=2, gradient_accumulation_steps=2, progress=False)
    assert model.calls == [(0, True), (1, True), (2, True), (3, True), (4, True)]


def test_adalora_schedule_runs_from_the_training_loop(tmp_path: Path) -> None:
    torch.manual_seed(1)
    config = sdk.AdaLoraConfig(
        init_r=4, target_r=2, tinit=1, tfinal=2, deltaT=1, total_step=8, target_modules=["q_proj", "v_proj"]
    )
    model = RecordingModel(tiny_llama(), config)
    result = sdk.train(
        model, lm_examples(8), max_steps=8, batch_size=4, learning_rate=1e-2, output_dir=tmp_path, progress=False
    )
    assert [s for s, _ in model.calls] == list(range(8)) and all(g for _, g in model.calls)
    pattern = model.peft_config["default"].rank_pattern
    assert pattern and len(pattern) == 4  # q_proj and v_proj in 2 layers
    assert sum(sum(mask) for mask in pattern.values()) == 2 * 4  # the target budget: target_r per module
    saved = json.loads((result.checkpoints[-1] / "adapter_config.json").read_text())
    assert saved["peft_type"] == "ADALORA" and saved["rank_pattern"] == pattern


def test_evaluation_every_n_steps_with_metrics() -> None:
    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def metrics(logits: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        assert labels is not None
        calls.append((tuple(logits.shape), tuple(labels.shape)))
        return {"token_accuracy": (logits[:, :-1].argmax(-1) == labels[:, 1:]).float().mean().item()}

    data = lm_examples(8)
    result = sdk.train(
        lora_llama(), data, data[:6], max_steps=7, batch_size=4, eval_batch_size=4, eval_steps=3,
        learning_rate=2e-2, compute_metrics=metrics, progress=False,
    )
    assert [e["step"] for e in result.eval_history] == [3, 6, 7]
    assert all(set(e) == {"step", "eval_loss", "token_accuracy"} for e in result.eval_history)
    assert calls == [((6, 10, 100), (6, 10))] * 3
    assert result.eval_history[-1]["eval_loss"] < result.eval_history[0]["eval_loss"]


def test_checkpoints_hold_the_adapter_in_peft_format_and_reload(tmp_path: Path) -> None:
    model = lora_llama()
    result = sdk.train(
        model, lm_examples(8), max_steps=5, batch_size=4, learning_rate=2e-2, save_steps=2, output_dir=tmp_path,
        progress=False,
    )
    assert [p.name for p in result.checkpoints] == ["checkpoint-2", "checkpoint-4", "checkpoint-5"]
    last = tmp_path / "checkpoint-5"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in last.iterdir()}
    from safetensors.torch import load_file

    keys = load_file(last / "adapter_model.safetensors").keys()
    assert keys and all("lora_" in k for k in keys)  # the adapter only, no base weights
    reloaded = sdk.AdapterModel.from_pretrained(tiny_llama(), last)
    model.eval()
    ids = lm_examples(2)[0]["input_ids"][None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_gradient_checkpointing_gives_the_same_training_and_is_undone() -> None:
    data = lm_examples(8)
    common = {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-2, "shuffle": False, "progress": False}
    plain, checkpointed = lora_llama(), lora_llama()
    seen: list[bool] = []
    layer = checkpointed.base_model.model.layers[0]
    handle = layer.register_forward_pre_hook(lambda m, a: seen.append(bool(m.gradient_checkpointing)))
    r_plain = sdk.train(plain, data, **common)
    r_ckpt = sdk.train(checkpointed, data, gradient_checkpointing=True, **common)
    handle.remove()
    assert seen and all(seen)
    assert r_ckpt.loss_history == pytest.approx(r_plain.loss_history, rel=1e-5)
    for a, b in zip(lora_state(plain).values(), lora_state(checkpointed).values(), strict=True):
        torch.testing.assert_close(a, b)
    base = checkpointed.get_base_model()
    assert not base.is_activation_checkpointing
    assert not getattr(base, "_require_grads_hooks", None)


def test_accepts_dataloaders_and_iterable_datasets() -> None:
    data = lm_examples(8)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(data)

    loader = DataLoader(data, batch_size=2, collate_fn=sdk.collate_batch)
    r_loader = sdk.train(lora_llama(), loader, max_steps=3, progress=False)
    assert r_loader.global_step == 3 and r_loader.samples == 6  # the loader's own batch size is used
    # 8 examples / batch 3 -> batches of 3, 3, 2; accumulation 2 -> the pass ends inside a group
    r_stream = sdk.train(lora_llama(), Stream(), max_steps=3, batch_size=3, gradient_accumulation_steps=2,
                         progress=False)
    assert r_stream.global_step == 3 and r_stream.samples == 3 + 3 + 2 + 3 + 3
    with pytest.raises(sdk.ConfigError, match="has no len"):
        sdk.train(lora_llama(), Stream(), epochs=1, progress=False)


def test_progress_bar_shows_loss_and_speed_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    sdk.train(lora_llama(), lm_examples(4), max_steps=2, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "tok_s=" in err and "2/2" in err
    sdk.train(lora_llama(), lm_examples(4), max_steps=2, batch_size=2)  # stderr is not a terminal here
    assert capsys.readouterr().err == ""


def test_bad_input_gets_clear_errors(tmp_path: Path) -> None:
    data = lm_examples(4)
    with pytest.raises(sdk.ConfigError, match="unknown training setting"):
        sdk.train(lora_llama(), data, learning_rat=1e-3)
    with pytest.raises(sdk.ConfigError, match="batch_size must be a positive integer"):
        sdk.TrainingConfig(batch_size=0)
    with pytest.raises(sdk.ConfigError, match="save_steps needs output_dir"):
        sdk.TrainingConfig(save_steps=5)
    with pytest.raises(sdk.ConfigError, match="put 'labels' in the batches"):
        sdk.train(lora_llama(), [{"input_ids": d["input_ids"]} for d in data], max_steps=1, progress=False)
    with pytest.raises(sdk.ConfigError, match="one-shot iterator"):
        sdk.train(lora_llama(), iter(data), max_steps=1, progress=False)
    with pytest.raises(sdk.ConfigError, match="empty"):
        sdk.train(lora_llama(), [], max_steps=1, progress=False)
    frozen = sdk.AdapterModel.from_pretrained(tiny_llama(), _saved(tmp_path))  # inference mode
    with pytest.raises(sdk.AdapterStateError, match="no trainable parameters"):
        sdk.train(frozen, data, max_steps=1, progress=False)
    with pytest.raises(sdk.ConfigError, match="has no save_pretrained"):
        sdk.Trainer(ConvNet(), data, config=sdk.TrainingConfig(output_dir=tmp_path))


def _saved(folder: Path) -> Path:
    lora_llama().save_pretrained(folder / "saved")
    return folder / "saved"


def test_loss_fn_trains_models_without_a_loss() -> None:
    torch.manual_seed(0)
    model = sdk.get_peft_model(ConvNet(), sdk.LoraConfig(r=2, target_modules=["head"]))
    g = torch.Generator().manual_seed(0)
    data = [{"x": torch.randn(3, 8, 8, generator=g), "y": torch.tensor(i % 4)} for i in range(8)]

    def loss_fn(out: torch.Tensor, batch: dict) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(out, batch["y"])

    # the conv net takes only x: drop y before calling it
    class OnlyX(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    result = sdk.train(OnlyX(model), data, max_steps=20, batch_size=8, learning_rate=5e-2, loss_fn=loss_fn,
                       progress=False)
    assert result.loss_history[-1] < result.loss_history[0]
    assert math.isfinite(result.train_loss)


# --- transformers.Trainer ------------------------------------------------------------------------


def _hf_args(tmp_path: Path, **overrides: object):
    from transformers import TrainingArguments

    kwargs = {
        "output_dir": str(tmp_path / "hf"), "max_steps": 4, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2, "learning_rate": 1e-2, "use_cpu": True, "report_to": [],
        "save_strategy": "no", "disable_tqdm": True, "remove_unused_columns": False, "label_names": ["labels"],
        "logging_strategy": "no", "dataloader_num_workers": 0,
    }
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def test_transformers_callback_runs_the_hook_before_gradients_are_cleared(tmp_path: Path) -> None:
    from transformers import Trainer

    from sdk.integrations.transformers import AdapterTrainerCallback

    torch.manual_seed(1)
    config = sdk.AdaLoraConfig(
        init_r=4, target_r=2, tinit=1, tfinal=1, deltaT=1, total_step=4, target_modules=["q_proj", "v_proj"]
    )
    model = RecordingModel(tiny_llama(), config)
    data = lm_examples(16)
    trainer = Trainer(
        model=model, args=_hf_args(tmp_path), train_dataset=data, eval_dataset=data[:4],
        callbacks=[AdapterTrainerCallback()],
    )
    trainer.train()
    assert model.calls == [(0, True), (1, True), (2, True), (3, True)]
    pattern = model.peft_config["default"].rank_pattern
    assert pattern and sum(sum(m) for m in pattern.values()) == 2 * 4
    assert "eval_loss" in trainer.evaluate()


def test_transformers_callback_refuses_setups_that_cannot_work(tmp_path: Path) -> None:
    from transformers import Trainer

    from sdk.integrations.transformers import AdapterTrainerCallback

    data = lm_examples(4)
    with pytest.raises(sdk.ConfigError, match="needs an sdk AdapterModel"):
        Trainer(model=tiny_llama(), args=_hf_args(tmp_path), train_dataset=data,
                callbacks=[AdapterTrainerCallback()])
    # with peft installed the Trainer reads the base model's forward: its defaults work, nothing is refused
    trainer = Trainer(model=lora_llama(), args=_hf_args(tmp_path, remove_unused_columns=True, label_names=None),
                      train_dataset=data, callbacks=[AdapterTrainerCallback()])
    trainer._set_signature_columns_if_needed()
    assert {"input_ids", "attention_mask", "labels"} <= set(trainer._signature_columns)
    assert trainer.label_names == ["labels"]
