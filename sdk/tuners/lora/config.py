"""``LoraConfig``: PEFT's ``adapter_config.json`` for ``peft_type: "LORA"``."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ...config import AdapterConfig
from ...errors import ConfigError
from ...merging import lora_scaling
from ...targeting import pattern_key


def _truthy(value: Any) -> bool:
    return bool(value)


def _not_none(value: Any) -> bool:
    return value is not None and value != [] and value != {}


#: Known PEFT fields whose non-default values change the math in ways we do not implement.
_UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "lora_bias": _truthy,
    "use_qalora": _truthy,
    "use_bdlora": _not_none,
    "layer_replication": _not_none,
    "target_parameters": _not_none,
    "trainable_token_indices": _not_none,
    "alora_invocation_tokens": _not_none,
    "megatron_config": _not_none,
}

#: Known PEFT fields that only matter while initialising or for other back ends.
_IGNORED = frozenset({
    "peft_version", "auto_mapping", "megatron_core", "loftq_config", "eva_config", "corda_config",
    "kasa_config", "lora_ga_config", "monteclora_config", "velora_config", "qalora_group_size",
    "ensure_weight_tying",
})

INIT_CHOICES = (True, False, "gaussian")


@dataclasses.dataclass
class LoraConfig(AdapterConfig):
    """Low-rank adaptation: ΔW = B·A·(alpha/r), with A r×in and B out×r."""

    peft_type: ClassVar[str] = "LORA"
    display_name: ClassVar[str] = "LoRA"

    @classmethod
    def method_name(cls, raw: Mapping[str, Any] | None = None) -> str:
        """"DoRA" for a LoRA config with ``use_dora``."""
        return "DoRA" if cls.peft_type == "LORA" and raw and raw.get("use_dora") is True else super().method_name(raw)
    ignored_keys: ClassVar[frozenset[str]] = _IGNORED
    unsupported: ClassVar[Mapping[str, Callable[[Any], bool]]] = _UNSUPPORTED

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, int] = dataclasses.field(default_factory=dict)
    alpha_pattern: dict[str, float] = dataclasses.field(default_factory=dict)
    bias: str = "none"
    modules_to_save: list[str] | None = None
    fan_in_fan_out: bool = False
    use_rslora: bool = False
    init_lora_weights: bool | str = True
    use_dora: bool = False
    #: PEFT's ``arrow_config`` (JSON form) on the ``arrow_router`` adapter of an Arrow model; see
    #: :mod:`sdk.tuners.lora.arrow`. None on every other LoRA adapter.
    arrow_config: dict[str, Any] | None = None

    def validate(self) -> None:
        if self.arrow_config is not None:
            from .arrow import ArrowConfig

            if isinstance(self.arrow_config, ArrowConfig):
                self.arrow_config = self.arrow_config.to_dict()
            self.arrow_config = ArrowConfig.from_dict(self.arrow_config).to_dict()
            if self.use_dora or self.peft_type != "LORA":
                raise ConfigError(f"arrow_config is for plain LoRA routers (not {self.peft_type} or DoRA)")
        if isinstance(self.target_modules, (set, frozenset, tuple)):
            self.target_modules = sorted(self.target_modules)
        if isinstance(self.exclude_modules, (set, frozenset, tuple)):
            self.exclude_modules = sorted(self.exclude_modules)
        if self.modules_to_save is not None:
            self.modules_to_save = list(self.modules_to_save)
        for name in ("target_modules", "exclude_modules", "modules_to_save"):
            value = getattr(self, name)
            if not (value is None or (isinstance(value, str) and name != "modules_to_save")
                    or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
                raise ConfigError(f"`{name}` must be a list of module names" +
                                  (" or one regex" if name != "modules_to_save" else "") + f", got {value!r}")
        for name in ("rank_pattern", "alpha_pattern"):
            if not isinstance(getattr(self, name) or {}, Mapping):
                raise ConfigError(f"`{name}` must be an object mapping module patterns to values")
        self.rank_pattern = dict(self.rank_pattern or {})
        self.alpha_pattern = dict(self.alpha_pattern or {})
        regexes = [("target_modules", self.target_modules)] if isinstance(self.target_modules, str) else []
        regexes += [("exclude_modules", self.exclude_modules)] if isinstance(self.exclude_modules, str) else []
        regexes += [(f"rank_pattern key {k!r}", k) for k in self.rank_pattern]
        regexes += [(f"alpha_pattern key {k!r}", k) for k in self.alpha_pattern]
        for what, pattern in regexes:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{what} is not a valid regular expression: {exc}") from exc
        for name in ("lora_alpha", "lora_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"`{name}` must be a number, got {value!r}")
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"`r` must be a positive integer, got {self.r!r}")
        for key, value in self.rank_pattern.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"rank_pattern[{key!r}] must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ConfigError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout!r}")
        if self.bias not in ("none", "all", "lora_only"):
            raise ConfigError(f"`bias` must be 'none', 'all' or 'lora_only', got {self.bias!r}")
        if not isinstance(self.use_dora, bool):
            raise ConfigError(f"`use_dora` must be true or false, got {self.use_dora!r}")
        if self.init_lora_weights not in INIT_CHOICES:
            raise ConfigError(
                f"init_lora_weights={self.init_lora_weights!r} is not supported; use True (Kaiming A, zero B), "
                "'gaussian' or False. Methods such as PiSSA/OLoRA/LoftQ rewrite the base weights, so an adapter "
                "trained with them does not fit the original base model unless PEFT converted it first."
            )
        if self.layers_to_transform is not None and isinstance(self.target_modules, str):
            raise ConfigError("`layers_to_transform` cannot be combined with a regex `target_modules` string")
        if self.layers_pattern and self.layers_to_transform is None:
            raise ConfigError("`layers_pattern` needs `layers_to_transform` (the layer indices to adapt)")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ConfigError("`target_modules` is an empty list; name at least one module")

    def to_dict(self) -> dict[str, Any]:
        """PEFT's dict; ``arrow_config`` only where it is set (an Arrow router)."""
        out = super().to_dict()
        if out.get("arrow_config") is None:
            out.pop("arrow_config", None)
        return out

    def rank_for(self, path: str) -> int:
        """Rank of the module at ``path`` (``rank_pattern`` overrides ``r``)."""
        key = pattern_key(self.rank_pattern, path)
        return self.rank_pattern[key] if key is not None else self.r

    def alpha_for(self, path: str) -> float:
        """Alpha of the module at ``path`` (``alpha_pattern`` overrides ``lora_alpha``)."""
        key = pattern_key(self.alpha_pattern, path)
        return self.alpha_pattern[key] if key is not None else self.lora_alpha

    def scaling_for(self, path: str, r: int | None = None) -> float:
        """Output scale of the module at ``path``."""
        return lora_scaling(r if r is not None else self.rank_for(path), self.alpha_for(path), self.use_rslora)
