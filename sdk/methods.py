"""The method registry: each adapter method's config class and tuner, by ``peft_type``.

``AdapterModel``, the on-disk format and upload checks look methods up here and talk to them only
through the :class:`Tuner` protocol, so they hold no per-method branches. The built-in methods are
listed in :data:`BUILTIN_METHODS` and imported on their first lookup; other methods are added with
:func:`register_method`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor, nn

from .config import AdapterConfig
from .errors import ConfigError

if TYPE_CHECKING:
    from .signature import ExpectedTensor, Signature


class Tuner(Protocol):
    """What a method provides to inject, persist and describe its adapters.

    A tuner may also implement the optional :class:`TrainingHooks` and :class:`CompositionHooks`;
    ``AdapterModel`` looks them up with ``getattr`` and skips tuners that lack them.
    """

    def inject(self, model: nn.Module, config: AdapterConfig, adapter_name: str) -> list[str]:
        """Add adapter ``adapter_name`` to ``model`` in place; return the adapted module paths."""
        ...

    def extra_state(self, model: nn.Module, config: AdapterConfig, adapter_name: str) -> dict[str, Tensor]:
        """Tensors outside the adapter layers that the adapter owns (e.g. trained biases).

        Keys are model-relative parameter paths as they appear on disk.
        """
        ...

    def mark_trainable(self, model: nn.Module, config: AdapterConfig, adapter_name: str) -> None:
        """Turn on ``requires_grad`` for any base parameters the method trains (e.g. biases)."""
        ...

    def zero_at_init(self, key: str) -> bool:
        """Whether on-disk tensor ``key`` starts as zeros (all of them zero = an untrained no-op adapter)."""
        ...

    def expected_shapes(self, config: AdapterConfig, signature: Signature) -> dict[str, ExpectedTensor]:
        """On-disk tensors (keys without :attr:`disk_prefix`) an adapter must have on ``signature``."""
        ...

    @property
    def disk_prefix(self) -> str:
        """What the method's on-disk keys start with before a module path: ``base_model.model.`` for
        layer methods; PEFT's prompt methods save their ``modules_to_save`` under ``base_model.``."""
        ...

    @property
    def factor_prefixes(self) -> tuple[str, ...]:
        """How the names of the tensors the method adds inside a module begin (``"lora_"`` for
        ``….q_proj.lora_A.weight``): an on-disk key's module path ends before the first of them."""
        ...

    def summary_fields(self, config: AdapterConfig) -> dict[str, Any]:
        """What a version summary shows of the adapter's size besides its tensors: any of ``r``,
        ``lora_alpha``, ``rank_pattern`` and ``num_virtual_tokens`` that the method has."""
        ...


class TrainingHooks(Protocol):
    """Optional per-method training hooks, called by ``AdapterModel`` for each active adapter."""

    def on_step_end(self, model: nn.Module, config: AdapterConfig, adapter_name: str, global_step: int) -> None:
        """Work after ``optimizer.step()`` and before ``zero_grad()`` (gradients are still there),
        e.g. AdaLoRA's rank allocation. Run through :meth:`sdk.AdapterModel.on_step_end`."""
        ...

    def extra_loss(self, model: nn.Module, config: AdapterConfig, adapter_name: str) -> Tensor | None:
        """A term added to ``output.loss`` of a training-mode forward (e.g. a regulariser), or None."""
        ...


class CompositionHooks(Protocol):
    """Optional: what a method allows next to other methods and in merges (looked up with ``getattr``)."""

    def conflict(self, other_peft_type: str) -> str | None:
        """Why an adapter of ``other_peft_type`` cannot share a model with this method's adapters (None: it can).

        ``AdapterModel.add_adapter`` asks the tuners on both sides."""
        ...

    def merge_refusal(self, config: AdapterConfig) -> str | None:
        """Why this adapter cannot be merged into the base weights (None: it can)."""
        ...


def composition_problem(new_type: str, existing_types: set[str]) -> str | None:
    """Why an adapter of ``new_type`` cannot join adapters of ``existing_types`` (None: it can)."""
    for other in sorted(existing_types):
        for mine, theirs in ((new_type, other), (other, new_type)):
            hook = getattr(get_method(mine).tuner, "conflict", None)
            reason = hook(theirs) if hook is not None else None
            if reason:
                return reason
    return None


def merge_refusal(config: AdapterConfig) -> str | None:
    """Why the adapter with ``config`` cannot be merged (None: it can)."""
    hook = getattr(get_method(config.peft_type).tuner, "merge_refusal", None)
    return hook(config) if hook is not None else None


@dataclass(frozen=True)
class Method:
    """A registered adapter method."""

    name: str
    config_cls: type[AdapterConfig]
    tuner: Tuner


#: The built-in methods: ``peft_type`` -> the package that defines it. Such a package names its
#: config classes in ``CONFIGS`` (each class's ``peft_type`` is a method) and its tuner in ``TUNER``.
BUILTIN_METHODS: dict[str, str] = {
    "ADALORA": "sdk.tuners.adalora",
    "IA3": "sdk.tuners.ia3",
    "LOHA": "sdk.tuners.loha",
    "LOKR": "sdk.tuners.lokr",
    "LORA": "sdk.tuners.lora",
    "POLY": "sdk.tuners.poly",
    "PREFIX_TUNING": "sdk.tuners.prompt",
    "PROMPT_TUNING": "sdk.tuners.prompt",
    "P_TUNING": "sdk.tuners.prompt",
}

_METHODS: dict[str, Method] = {}


def register_method(name: str, config_cls: type[AdapterConfig], tuner: Tuner) -> Method:
    """Register a method under its ``peft_type`` name (e.g. ``"LORA"``)."""
    key = name.upper()
    _load_builtin(key)
    return _add(key, config_cls, tuner)


def get_method(peft_type: str) -> Method:
    """The method registered for ``peft_type``; a clear error lists the known ones."""
    key = str(peft_type).upper()
    _load_builtin(key)
    method = _METHODS.get(key)
    if method is None:
        raise ConfigError(
            f"unknown adapter method peft_type={peft_type!r}; this SDK supports: {', '.join(registered_methods())}"
        )
    return method


def registered_methods() -> list[str]:
    """Names of all registered methods."""
    for key in BUILTIN_METHODS:
        _load_builtin(key)
    return sorted(_METHODS)


def method_name(peft_type: str, raw: Mapping[str, Any] | None = None) -> str:
    """The readable name of a method ("LoRA", "DoRA" for a config with ``use_dora``, "IA³"); unknown
    methods keep their ``peft_type``."""
    try:
        return get_method(peft_type).config_cls.method_name(raw)
    except ConfigError:
        return str(peft_type)


def config_from_dict(data: Mapping[str, Any]) -> AdapterConfig:
    """Parse a PEFT-style config dict into the right config class by its ``peft_type``."""
    if "peft_type" not in data:
        raise ConfigError("adapter config has no 'peft_type'")
    return get_method(data["peft_type"]).config_cls.from_dict(data)


def _add(key: str, config_cls: type[AdapterConfig], tuner: Tuner) -> Method:
    if key in _METHODS and _METHODS[key].config_cls is not config_cls:
        raise ValueError(f"adapter method {key!r} is already registered")
    method = Method(key, config_cls, tuner)
    _METHODS[key] = method
    return method


def _load_builtin(key: str) -> None:
    """Register the built-in methods of the package that defines ``key`` unless that happened already."""
    if key not in BUILTIN_METHODS or key in _METHODS:
        return
    package = importlib.import_module(BUILTIN_METHODS[key])
    for config_cls in package.CONFIGS:
        _add(config_cls.peft_type, config_cls, package.TUNER)
