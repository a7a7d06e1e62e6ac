"""``transformers.Trainer`` support: a callback that runs adapter methods' per-step work (AdaLoRA's rank budget)
and records the run (metrics, parameters, dataset) on ``model.provenance``, which ``sdk.push`` sends.

Usage::

    from sdk.integrations.transformers import AdapterTrainerCallback
    trainer = transformers.Trainer(
        model=adapter_model,
        args=transformers.TrainingArguments(..., remove_unused_columns=False, label_names=["labels"]),
        train_dataset=...,
        callbacks=[AdapterTrainerCallback()],
    )

The callback calls ``model.on_step_end(step)`` from ``on_optimizer_step``: right after
``optimizer.step()`` and before ``zero_grad()``, while the gradients AdaLoRA scores importance
with still exist (``on_step_end`` of ``TrainerCallback`` runs after they are cleared). ``step``
is the 0-based index of the optimizer step just taken, the same number :func:`sdk.train` passes.

Checkpoints hold the adapter only, in PEFT's format, with or without the callback: once ``peft`` is
installed (``transformers`` imports it), the Trainer treats an ``AdapterModel`` as a PEFT model
(:mod:`sdk.integrations.peft_view`), so it saves with ``save_pretrained``, resumes and loads the best
checkpoint with ``load_adapter``, and reads input and label names from the base model's ``forward``.
Without ``peft`` the Trainer cannot see inputs through ``AdapterModel.forward(**kwargs)``: pass
``remove_unused_columns=False`` (else it drops every input; the callback refuses to run) and
``label_names=["labels"]`` (else evaluation reports no loss; the callback warns).
"""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..errors import ConfigError
from ..model import AdapterModel
from ..provenance import dataset_record, record_training
from .peft_view import peft_view

#: ``TrainingArguments`` recorded as a run's parameters.
RECORDED_ARGS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "weight_decay", "warmup_steps", "warmup_ratio", "max_grad_norm", "seed", "optim", "lr_scheduler_type",
)


class AdapterTrainerCallback(TrainerCallback):
    """Calls ``model.on_step_end(state.global_step)`` after every optimizer step of ``transformers.Trainer``,
    and keeps the run's record on ``model.provenance``: the last logged metrics (``loss``, ``eval_*``),
    the main ``TrainingArguments`` and the training dataset (``dataset_name``, else its own name, and a
    sha256 of its examples)."""

    def __init__(self, dataset_name: str | None = None) -> None:
        self.dataset_name = dataset_name
        self._metrics: dict[str, float] = {}
        self._dataset: dict[str, str] | None = None

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        _check(args, kwargs.get("model"))

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        _check(args, kwargs.get("model"))  # again: the callback may have been added after __init__
        loader = kwargs.get("train_dataloader")
        data = getattr(loader, "dataset", None)
        if data is not None:
            name = (self.dataset_name or getattr(getattr(data, "info", None), "dataset_name", None)
                    or type(data).__name__)
            self._dataset = dataset_record(str(name), data)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "grad_norm"):
                self._metrics[key] = float(value)
        self._record(args, state, kwargs.get("model"))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self._record(args, state, kwargs.get("model"))

    def _record(self, args: TrainingArguments, state: TrainerState, model: Any) -> None:
        params: dict[str, Any] = {k: getattr(args, k) for k in RECORDED_ARGS if hasattr(args, k)}
        params = {k: (v if isinstance(v, (int, float, bool, str)) or v is None else str(v)) for k, v in params.items()}
        params["trainer"] = "transformers.Trainer"
        metrics = dict(self._metrics, train_steps=float(state.global_step))
        if state.best_metric is not None:
            metrics["best_metric"] = float(state.best_metric)
        record_training(model, metrics, params, self._dataset)

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # state.global_step is not incremented yet here: it is the 0-based index of the step just taken
        kwargs["model"].on_step_end(state.global_step)


def _check(args: TrainingArguments, model: Any) -> None:
    """Refuse set-ups in which the callback would do nothing useful or the Trainer would drop the inputs."""
    if not callable(getattr(model, "on_step_end", None)):
        raise ConfigError(
            f"AdapterTrainerCallback needs an sdk AdapterModel (a model with on_step_end); "
            f"the Trainer's model is a {type(model).__name__}"
        )
    if not isinstance(model, AdapterModel) or peft_view(type(model), "transformers") is not type(model):
        return  # not ours, or seen as a PEFT model: the Trainer reads the base model's forward
    if args.remove_unused_columns:
        raise ConfigError(
            "transformers.Trainer would drop every input column, because AdapterModel.forward takes **kwargs; "
            "pass TrainingArguments(remove_unused_columns=False, label_names=['labels'])"
        )
    if args.label_names is None:
        warnings.warn(
            "transformers.Trainer cannot see label names through AdapterModel.forward(**kwargs); "
            "pass TrainingArguments(label_names=['labels']) so that evaluation computes a loss",
            stacklevel=3,
        )


__all__ = ["AdapterTrainerCallback"]
