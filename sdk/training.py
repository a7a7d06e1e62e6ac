"""A small training loop for adapters: ``sdk.train(model, data, ...)`` or ``sdk.Trainer``.

What it does, and nothing more: AdamW over the trainable parameters, a linear (or constant)
learning-rate schedule with warmup, gradient accumulation, optional gradient checkpointing,
evaluation every N steps (loss plus an optional metric function), checkpoints of the adapter
only (PEFT format, ``checkpoint-<step>/``), a progress bar with loss and speed, and the hook
adaptive methods need: after every optimizer step, before the gradients are cleared, it calls
``model.on_step_end(step)`` where the model has that method (AdaLoRA's rank budget runs there).

Data: a ``DataLoader``, a map-style ``Dataset``/list, or an ``IterableDataset``/iterable whose
items are dicts of tensors (``input_ids``, ``attention_mask``, ``labels``…); items are batched
with :func:`collate_batch` unless another ``collate_fn`` is given.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from .errors import AdapterStateError, ConfigError
from .provenance import dataset_record, record_training

log = logging.getLogger(__name__)

#: Padding value per key in :func:`collate_batch` (others pad with 0).
LABEL_PAD_ID = -100

LossFn = Callable[[Any, Mapping[str, Any]], Tensor]
MetricFn = Callable[[Tensor, Tensor | None], Mapping[str, float]]


@dataclass
class TrainingConfig:
    """Settings of :class:`Trainer`. Steps count optimizer steps (after gradient accumulation)."""

    output_dir: str | Path | None = None  # checkpoints go to <output_dir>/checkpoint-<step>/
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 8
    eval_batch_size: int | None = None  # default: batch_size
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    lr_scheduler: Literal["linear", "constant"] = "linear"  # linear: warmup, then decay to 0
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps is 0
    max_grad_norm: float | None = 1.0
    gradient_checkpointing: bool = False
    eval_steps: int | None = None  # evaluate every N steps (and always at the end when there is eval data)
    save_steps: int | None = None  # checkpoint every N steps (needs output_dir)
    save_final: bool = True  # checkpoint after the last step (needs output_dir)
    shuffle: bool = True
    drop_last: bool = False
    seed: int = 0  # shuffling order
    progress: bool | None = None  # None: show the bar only when stderr is a terminal
    dataset_name: str | None = None  # recorded with the run (model.provenance); default: the data's type name

    def __post_init__(self) -> None:
        positive = {"batch_size": self.batch_size, "gradient_accumulation_steps": self.gradient_accumulation_steps}
        optional_positive = {
            "max_steps": self.max_steps, "eval_batch_size": self.eval_batch_size,
            "eval_steps": self.eval_steps, "save_steps": self.save_steps,
        }
        for name, value in {**positive, **optional_positive}.items():
            if (value is not None or name in positive) and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"TrainingConfig.{name} must be a positive integer, got {value!r}")
        if not self.epochs > 0 and self.max_steps is None:
            raise ConfigError(f"TrainingConfig.epochs must be > 0 (or set max_steps), got {self.epochs!r}")
        if self.learning_rate <= 0:
            raise ConfigError(f"TrainingConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.lr_scheduler not in ("linear", "constant"):
            raise ConfigError(f"TrainingConfig.lr_scheduler must be 'linear' or 'constant', got {self.lr_scheduler!r}")
        if self.warmup_steps < 0 or not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError("TrainingConfig.warmup_steps must be >= 0 and warmup_ratio in [0, 1)")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"TrainingConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.save_steps is not None and self.output_dir is None:
            raise ConfigError("TrainingConfig.save_steps needs output_dir (where checkpoint-<step>/ folders go)")


@dataclass
class TrainResult:
    """What a training run did: per-step loss and learning rate, evaluations, checkpoints, speed."""

    global_step: int
    epochs: float
    loss_history: list[float] = field(default_factory=list)  # mean training loss of each optimizer step
    lr_history: list[float] = field(default_factory=list)  # learning rate used by each optimizer step
    eval_history: list[dict[str, float]] = field(default_factory=list)  # each has "step" and "eval_loss"/metrics
    checkpoints: list[Path] = field(default_factory=list)
    train_runtime_s: float = 0.0  # training time without evaluation and saving
    samples: int = 0
    tokens: int = 0  # attention_mask ones (or input_ids elements) seen

    @property
    def train_loss(self) -> float:
        """Mean of the per-step losses (NaN before any step)."""
        return sum(self.loss_history) / len(self.loss_history) if self.loss_history else math.nan

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_runtime_s if self.train_runtime_s > 0 else 0.0

    @property
    def steps_per_s(self) -> float:
        return self.global_step / self.train_runtime_s if self.train_runtime_s > 0 else 0.0


# --- batching ----------------------------------------------------------------------------------


def collate_batch(
    features: Sequence[Mapping[str, Any]], pad_token_id: int = 0, label_pad_id: int = LABEL_PAD_ID
) -> dict[str, Tensor]:
    """Stack a list of dicts (tensors, lists or numbers) into one dict of batch tensors.

    Sequences of unequal length are right-padded: ``labels`` with ``label_pad_id`` (ignored by
    the loss), ``input_ids`` with ``pad_token_id``, everything else (``attention_mask``…) with 0.
    """
    if not features:
        raise ConfigError("collate_batch got an empty list of examples")
    for i, f in enumerate(features):
        if not isinstance(f, Mapping):
            raise ConfigError(f"example {i} is a {type(f).__name__}; examples must be dicts like {{'input_ids': ...}}")
    keys = list(features[0])
    batch: dict[str, Tensor] = {}
    for key in keys:
        values = []
        for i, f in enumerate(features):
            if key not in f:
                raise ConfigError(f"example {i} has no {key!r} but example 0 does; every example needs the same keys")
            values.append(f[key] if isinstance(f[key], Tensor) else torch.as_tensor(f[key]))
        pad = label_pad_id if key == "labels" else pad_token_id if key == "input_ids" else 0
        batch[key] = _stack_padded(key, values, pad)
    return batch


def _stack_padded(key: str, values: list[Tensor], pad: int) -> Tensor:
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) == 1:
        return torch.stack(values)
    if any(v.dim() == 0 for v in values) or {v.shape[1:] for v in values} != {values[0].shape[1:]}:
        raise ConfigError(f"cannot batch {key!r}: shapes {sorted(shapes)} differ beyond the first (sequence) dimension")
    longest = max(v.shape[0] for v in values)
    out = values[0].new_full((len(values), longest, *values[0].shape[1:]), pad)
    for i, v in enumerate(values):
        out[i, : v.shape[0]] = v
    return out


class _Replayable(IterableDataset):
    """A re-iterable object (not a Dataset) presented to ``DataLoader`` as an iterable dataset."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)


def make_loader(
    data: Any, batch_size: int, shuffle: bool, collate_fn: Callable[[list[Any]], Any], seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """``data`` as a DataLoader: returned as is when it already is one."""
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Mapping) or isinstance(data, (str, bytes)):
        raise ConfigError(
            f"training/eval data must be a Dataset, DataLoader or list of example dicts, got a {type(data).__name__}"
        )
    if isinstance(data, IterableDataset):
        return DataLoader(data, batch_size=batch_size, collate_fn=collate_fn, drop_last=drop_last)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        if len(data) == 0:
            raise ConfigError("the training/eval data is empty (0 examples)")
        g = torch.Generator().manual_seed(seed)
        return DataLoader(
            data, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn, generator=g, drop_last=drop_last
        )
    if isinstance(data, Iterator):
        raise ConfigError(
            "training/eval data is a one-shot iterator, which cannot be replayed for several epochs or evaluations; "
            "pass a list, a Dataset, an IterableDataset or a DataLoader"
        )
    if isinstance(data, Iterable):
        return DataLoader(_Replayable(data), batch_size=batch_size, collate_fn=collate_fn, drop_last=drop_last)
    raise ConfigError(f"training/eval data of type {type(data).__name__} is not iterable")


def _length(loader: DataLoader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _to_device(batch: Any, device: torch.device) -> dict[str, Any]:
    if not isinstance(batch, Mapping):
        raise ConfigError(
            f"a batch is a {type(batch).__name__}; batches must be dicts of tensors "
            "(input_ids, attention_mask, labels, …) that the model takes as keyword arguments"
        )
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _count_tokens(batch: Mapping[str, Any]) -> int:
    mask = batch.get("attention_mask")
    if isinstance(mask, Tensor):
        return int(mask.sum())
    ids = batch.get("input_ids")
    return ids.numel() if isinstance(ids, Tensor) else 0


def _count_samples(batch: Mapping[str, Any]) -> int:
    first = next((v for v in batch.values() if isinstance(v, Tensor) and v.dim() > 0), None)
    return int(first.shape[0]) if first is not None else 1


# --- the loop ----------------------------------------------------------------------------------


class Trainer:
    """Runs :class:`TrainingConfig` on ``model`` (an ``AdapterModel`` or any module with trainable parameters).

    ``loss_fn(outputs, batch)`` replaces ``outputs.loss`` for models that compute none;
    ``compute_metrics(logits, labels)`` gets the eval logits and labels concatenated over batches
    and returns extra metrics (e.g. accuracy).
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Any,
        eval_data: Any | None = None,
        config: TrainingConfig | None = None,
        *,
        collate_fn: Callable[[list[Any]], Any] = collate_batch,
        loss_fn: LossFn | None = None,
        compute_metrics: MetricFn | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.model = model
        self.config = config or TrainingConfig()
        self.train_data = train_data
        self.eval_data = eval_data
        self.collate_fn = collate_fn
        self.loss_fn = loss_fn
        self.compute_metrics = compute_metrics
        self.optimizer = optimizer
        if self.config.output_dir is not None and not callable(getattr(model, "save_pretrained", None)):
            raise ConfigError(f"output_dir is set but {type(model).__name__} has no save_pretrained() for checkpoints")

    # --- public --------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Run the loop to ``max_steps`` (or ``epochs``) and return the history."""
        cfg, model = self.config, self.model
        loader = make_loader(self.train_data, cfg.batch_size, cfg.shuffle, self.collate_fn, cfg.seed, cfg.drop_last)
        per_epoch = _length(loader)
        if per_epoch == 0:
            raise ConfigError("the training data is empty (0 batches)")
        accum = cfg.gradient_accumulation_steps
        if cfg.max_steps is not None:
            total = cfg.max_steps
        elif per_epoch is None:
            raise ConfigError("the training data has no len(), so epochs cannot be counted; set max_steps")
        else:
            total = max(1, math.ceil(cfg.epochs * math.ceil(per_epoch / accum)))
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise AdapterStateError(
                "the model has no trainable parameters; is an adapter active and not loaded with is_trainable=False?"
            )
        opt = self.optimizer or torch.optim.AdamW(
            params, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
        hook = getattr(model, "on_step_end", None)
        device = _device_of(model)
        result = TrainResult(global_step=0, epochs=0.0)
        was_training = model.training
        undo_checkpointing = self._enable_checkpointing() if cfg.gradient_checkpointing else None
        bar = _progress_bar(total, cfg.progress)
        model.train()
        opt.zero_grad(set_to_none=True)
        try:
            step = epoch = 0
            while step < total:
                pending, running, done = 0, 0.0, 0
                t0 = time.perf_counter()
                for i, raw in enumerate(loader):
                    batch = _to_device(raw, device)
                    if pending == 0:  # size of this accumulation group (the last one of an epoch may be short)
                        group = min(accum, per_epoch - i) if per_epoch is not None else accum
                    loss = self._loss(model(**batch), batch)
                    (loss / group).backward()
                    running += loss.item() / group
                    result.tokens += _count_tokens(batch)
                    result.samples += _count_samples(batch)
                    pending, done = pending + 1, i + 1
                    if pending == group:
                        result.train_runtime_s += time.perf_counter() - t0
                        step = self._step(opt, sched, params, hook, step, running, result, bar)
                        result.epochs = epoch + (done / per_epoch if per_epoch else 0.0)
                        self._maybe_eval_and_save(step, total, result)
                        pending, running, t0 = 0, 0.0, time.perf_counter()
                        if step >= total:
                            break
                else:
                    if done == 0:
                        raise ConfigError("the training data yielded no batches")
                    result.train_runtime_s += time.perf_counter() - t0
                    if pending:  # an iterable without len() ended inside an accumulation group
                        step = self._step(opt, sched, params, hook, step, running * group / pending, result, bar)
                        self._maybe_eval_and_save(step, total, result)
                    result.epochs = float(epoch + 1)
                epoch += 1
            self._finish(step, result)
        finally:
            bar.close()
            if undo_checkpointing is not None:
                undo_checkpointing()
            model.train(was_training)
        return result

    def evaluate(self, eval_data: Any | None = None) -> dict[str, float]:
        """Mean loss over ``eval_data`` (default: the trainer's) and the ``compute_metrics`` results."""
        data = eval_data if eval_data is not None else self.eval_data
        if data is None:
            raise ConfigError("no eval data: pass eval_data to the Trainer or to evaluate()")
        cfg, model = self.config, self.model
        loader = make_loader(data, cfg.eval_batch_size or cfg.batch_size, False, self.collate_fn)
        device = _device_of(model)
        was_training = model.training
        model.eval()
        loss_sum, n, n_loss = 0.0, 0, 0
        logits: list[Tensor] = []
        labels: list[Tensor] = []
        try:
            with torch.no_grad():
                for raw in loader:
                    batch = _to_device(raw, device)
                    out = model(**batch)
                    size = _count_samples(batch)
                    loss = self._loss(out, batch, required=self.compute_metrics is None)
                    if loss is not None:
                        loss_sum, n_loss = loss_sum + float(loss) * size, n_loss + size
                    n += size
                    if self.compute_metrics is not None:
                        logits.append(_logits(out).detach().cpu())
                        if isinstance(batch.get("labels"), Tensor):
                            labels.append(batch["labels"].detach().cpu())
        finally:
            model.train(was_training)
        if n == 0:
            raise ConfigError("the eval data is empty")
        metrics: dict[str, float] = {}
        if n_loss:
            metrics["eval_loss"] = loss_sum / n_loss
        if self.compute_metrics is not None:
            cat_labels = _concat("labels", labels) if labels else None
            extra = self.compute_metrics(_concat("logits", logits), cat_labels)
            metrics.update({k: float(v) for k, v in extra.items()})
        return metrics

    # --- steps -----------------------------------------------------------------------------------
    def _loss(self, outputs: Any, batch: Mapping[str, Any], required: bool = True) -> Tensor | None:
        if self.loss_fn is not None:
            return self.loss_fn(outputs, batch)
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
        if loss is None and required:
            raise ConfigError(
                "the model returned no loss: put 'labels' in the batches, or pass loss_fn(outputs, batch)"
            )
        return loss

    def _step(
        self, opt: torch.optim.Optimizer, sched: Any, params: list[nn.Parameter], hook: Any, step: int, loss: float,
        result: TrainResult, bar: Any,
    ) -> int:
        """One optimizer step (clip, step, hook, schedule, zero_grad) and its bookkeeping; returns the step count."""
        lr = sched.get_last_lr()[0]
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        opt.step()
        if callable(hook):
            hook(step)  # before zero_grad: AdaLoRA scores importance from the gradients
        sched.step()
        opt.zero_grad(set_to_none=True)
        result.loss_history.append(loss)
        result.lr_history.append(lr)
        result.global_step = step + 1
        _show(bar, loss, lr, result)
        return step + 1

    def _maybe_eval_and_save(self, step: int, total: int, result: TrainResult) -> None:
        cfg = self.config
        if self.eval_data is not None and cfg.eval_steps and step % cfg.eval_steps == 0 and step < total:
            self._record_eval(step, result)
        if cfg.save_steps and step % cfg.save_steps == 0:
            result.checkpoints.append(self.save_checkpoint(step))

    def _finish(self, step: int, result: TrainResult) -> None:
        if self.eval_data is not None:
            self._record_eval(step, result)
        cfg = self.config
        self._record_provenance(result)
        if cfg.output_dir is not None and cfg.save_final and not (cfg.save_steps and step % cfg.save_steps == 0):
            result.checkpoints.append(self.save_checkpoint(step))

    def _record_provenance(self, result: TrainResult) -> None:
        """What this run was, on ``model.provenance`` (pushed with the adapter, saved with checkpoints)."""
        cfg = self.config
        metrics: dict[str, float] = {"train_loss": result.train_loss, "train_steps": float(result.global_step)}
        if result.loss_history:
            metrics["final_loss"] = result.loss_history[-1]
        if result.eval_history:
            metrics.update({k: v for k, v in result.eval_history[-1].items() if k != "step"})
        params = {
            "learning_rate": cfg.learning_rate, "max_steps": cfg.max_steps, "epochs": cfg.epochs,
            "batch_size": cfg.batch_size, "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "lr_scheduler": cfg.lr_scheduler, "warmup_steps": cfg.warmup_steps, "warmup_ratio": cfg.warmup_ratio,
            "weight_decay": cfg.weight_decay, "max_grad_norm": cfg.max_grad_norm, "seed": cfg.seed,
            "trainer": "sdk.train",
        }
        data = self.train_data
        name = cfg.dataset_name or getattr(getattr(data, "info", None), "dataset_name", None) or type(data).__name__
        record_training(self.model, metrics, params, dataset_record(str(name), data))

    def _record_eval(self, step: int, result: TrainResult) -> None:
        metrics = self.evaluate()
        result.eval_history.append({"step": float(step), **metrics})
        log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def save_checkpoint(self, step: int) -> Path:
        """Write the adapter (only) to ``<output_dir>/checkpoint-<step>/`` in PEFT format."""
        if self.config.output_dir is None:
            raise ConfigError("save_checkpoint needs TrainingConfig.output_dir")
        folder = Path(self.config.output_dir) / f"checkpoint-{step}"
        self.model.save_pretrained(folder)
        log.info("saved %s", folder)
        return folder

    def _enable_checkpointing(self) -> Callable[[], None] | None:
        """Turn on the base model's non-reentrant gradient checkpointing; returns how to undo it (None: was on)."""
        return enable_gradient_checkpointing(self.model)


def _base_of(model: nn.Module) -> nn.Module:
    return model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model


def enable_gradient_checkpointing(model: nn.Module) -> Callable[[], None] | None:
    """Non-reentrant gradient checkpointing on a transformers model (or an adapter wrapper around one).

    Non-reentrant checkpointing needs no input that requires grad, so frozen embeddings are fine;
    transformers may still hook the embeddings to require grad, and the returned undo function
    removes such hooks again unless they were there before. Returns None when it was already on.
    """
    base = _base_of(model)
    if getattr(base, "is_activation_checkpointing", None) or (
        not hasattr(base, "is_activation_checkpointing") and getattr(base, "gradient_checkpointing", False)
    ):
        return None
    had_hooks = bool(getattr(base, "_require_grads_hooks", None))
    kwargs = {"use_reentrant": False}
    if callable(getattr(base, "activation_checkpointing_enable", None)):  # the transformers 5 name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        off = base.activation_checkpointing_disable
    elif callable(getattr(base, "gradient_checkpointing_enable", None)):
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        off = base.gradient_checkpointing_disable
    else:
        raise ConfigError(
            f"gradient_checkpointing=True needs a transformers model; {type(base).__name__} has no "
            "gradient_checkpointing_enable()"
        )

    def undo() -> None:
        off()
        if not had_hooks and getattr(base, "_require_grads_hooks", None):
            base.disable_input_require_grads()
            base._require_grads_hooks = []

    return undo


def lr_lambda(cfg: TrainingConfig, total: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warmup, then linear decay to 0 (or constant)."""
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.lr_scheduler == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _logits(outputs: Any) -> Tensor:
    if isinstance(outputs, Tensor):
        return outputs
    logits = outputs.get("logits") if isinstance(outputs, Mapping) else getattr(outputs, "logits", None)
    if logits is None:
        raise ConfigError("compute_metrics needs model outputs with .logits (or a tensor)")
    return logits


def _concat(what: str, parts: list[Tensor]) -> Tensor:
    if len({p.shape[1:] for p in parts}) > 1:
        raise ConfigError(
            f"eval {what} differ in shape between batches ({sorted({tuple(p.shape) for p in parts})}); "
            "pad eval examples to one length so compute_metrics can get them in one tensor"
        )
    return torch.cat(parts)


def _progress_bar(total: int, show: bool | None) -> Any:
    from tqdm.auto import tqdm

    enabled = sys.stderr.isatty() if show is None else show
    return tqdm(total=total, disable=not enabled, unit="step", dynamic_ncols=True, desc="train")


def _show(bar: Any, loss: float, lr: float, result: TrainResult) -> None:
    bar.update(1)
    if not bar.disable:
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{result.tokens_per_s:.0f}", refresh=False)


def train(
    model: nn.Module,
    train_data: Any,
    eval_data: Any | None = None,
    *,
    config: TrainingConfig | None = None,
    collate_fn: Callable[[list[Any]], Any] = collate_batch,
    loss_fn: LossFn | None = None,
    compute_metrics: MetricFn | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    **settings: Any,
) -> TrainResult:
    """Train ``model`` on ``train_data``; keyword ``settings`` are :class:`TrainingConfig` fields.

    Example: ``sdk.train(model, examples, max_steps=100, learning_rate=1e-3, output_dir="out")``.
    """
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown training setting(s) {unknown}; TrainingConfig has {sorted(known)}")
    if config is not None and settings:
        config = dataclasses.replace(config, **settings)
    elif config is None:
        config = TrainingConfig(**settings)
    trainer = Trainer(
        model, train_data, eval_data, config,
        collate_fn=collate_fn, loss_fn=loss_fn, compute_metrics=compute_metrics, optimizer=optimizer,
    )
    return trainer.train()


__all__ = ["TrainResult", "Trainer", "TrainingConfig", "collate_batch", "lr_lambda", "make_loader", "train"]
