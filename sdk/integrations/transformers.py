"""``transformers.Trainer`` support: a callback that runs adapter methods' per-step work (AdaLoRA's rank budget).

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

``Trainer`` reads input and label names from the model's ``forward`` signature, which an
``AdapterModel`` hides behind ``**kwargs``: pass ``remove_unused_columns=False`` (else the Trainer
drops every input; the callback refuses to run) and ``label_names=["labels"]`` (else evaluation
reports no loss; the callback warns).
"""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..errors import ConfigError
from ..model import AdapterModel


class AdapterTrainerCallback(TrainerCallback):
    """Calls ``model.on_step_end(state.global_step)`` after every optimizer step of ``transformers.Trainer``."""

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        _check(args, kwargs.get("model"))

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        _check(args, kwargs.get("model"))  # again: the callback may have been added after __init__

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
    if not isinstance(model, AdapterModel):
        return
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
