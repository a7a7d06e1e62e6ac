"""``AdaLoraConfig``: PEFT's ``adapter_config.json`` for ``peft_type: "ADALORA"``.

AdaLoRA keeps every LoRA field (PEFT derives its config from LoRA's) and adds the rank
allocation schedule. Its ``rank_pattern`` is not LoRA's module -> rank map: it is written by
training and maps ``"<module path>.lora_E"`` to ``init_r`` booleans, the singular triplets kept.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ...errors import ConfigError
from ..lora.config import _IGNORED, _UNSUPPORTED, LoraConfig

#: LoRA fields PEFT's AdaLoRA accepts but never reads, with their LoRA defaults.
_IGNORED_BY_ADALORA: dict[str, Any] = {"r": 8, "alpha_pattern": {}, "use_rslora": False}
#: ``rank_pattern`` keys end with this: one mask per adapted module.
MASK_SUFFIX = ".lora_E"


def _truthy(value: Any) -> bool:
    return bool(value)


class AdaLoraConfigWarning(UserWarning):
    """A LoRA field that AdaLoRA ignores was set."""


@dataclasses.dataclass
class AdaLoraConfig(LoraConfig):
    """Adaptive LoRA: ΔW = P·(Λ⊙Q)·alpha/init_r, with ranks pruned by importance during training.

    Training runs in three phases: ``tinit`` warm-up steps at the full budget, a cubic
    decrease of the total rank budget from ``init_r`` × modules to ``target_r`` × modules
    until step ``total_step - tfinal`` (pruning every ``deltaT`` steps), then fine-tuning with
    the final ranks. The schedule runs from :meth:`sdk.AdapterModel.on_step_end`.
    """

    peft_type: ClassVar[str] = "ADALORA"
    display_name: ClassVar[str] = "AdaLoRA"
    ignored_keys: ClassVar[frozenset[str]] = _IGNORED - {"loftq_config"}
    unsupported: ClassVar[Mapping[str, Callable[[Any], bool]]] = {
        **_UNSUPPORTED, "use_dora": _truthy, "loftq_config": _truthy,
    }

    init_r: int = 12
    target_r: int = 8
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1  # PEFT's field name
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    total_step: int | None = None
    rank_pattern: dict[str, list[bool]] | None = None  # type: ignore[assignment]

    def validate(self) -> None:
        masks = self.rank_pattern
        self.rank_pattern = {}  # LoRA's checks expect module -> int; ours follow below
        try:
            super().validate()
        finally:
            self.rank_pattern = masks
        for name in ("init_r", "target_r", "tinit", "tfinal", "deltaT"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"`{name}` must be a non-negative integer, got {value!r}")
        if self.init_r < 1:
            raise ConfigError(f"`init_r` must be at least 1, got {self.init_r}")
        if self.target_r > self.init_r:
            raise ConfigError(
                f"`target_r` ({self.target_r}) must not exceed `init_r` ({self.init_r}): AdaLoRA only prunes ranks"
            )
        if self.deltaT < 1:
            raise ConfigError(f"`deltaT` must be at least 1 (steps between two rank allocations), got {self.deltaT}")
        if (not isinstance(self.total_step, int) or isinstance(self.total_step, bool)
                or self.total_step <= 0):
            raise ConfigError(
                f"AdaLoRA needs `total_step`, the number of training steps, as a positive integer; got "
                f"{self.total_step!r}"
            )
        if self.tinit >= self.total_step - self.tfinal:
            raise ConfigError(
                f"tinit={self.tinit}, tfinal={self.tfinal} and total_step={self.total_step} leave no steps for "
                "rank allocation (AdaLoRA needs tinit < total_step - tfinal); lower tinit/tfinal or raise total_step"
            )
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value < 1.0:
                raise ConfigError(f"`{name}` is an EMA factor and must lie strictly between 0 and 1, got {value!r}")
        weight = self.orth_reg_weight
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise ConfigError(f"`orth_reg_weight` must be a number >= 0, got {weight!r}")
        self._validate_masks()
        if getattr(self, "use_dora", False):
            raise ConfigError("AdaLoRA does not support DoRA: set use_dora=False (PEFT refuses it too)")
        ignored = [n for n, default in _IGNORED_BY_ADALORA.items() if getattr(self, n) != default]
        if ignored:
            warnings.warn(
                f"AdaLoRA ignores {ignored} (as PEFT does): set the starting rank with `init_r`, the average final "
                "rank with `target_r`; the scale is lora_alpha / init_r",
                AdaLoraConfigWarning,
                stacklevel=4,
            )

    def _validate_masks(self) -> None:
        if self.rank_pattern is None:
            return
        if not isinstance(self.rank_pattern, Mapping):
            raise ConfigError("`rank_pattern` must be an object mapping '<module path>.lora_E' to lists of booleans")
        self.rank_pattern = dict(self.rank_pattern)
        for key, mask in self.rank_pattern.items():
            if not isinstance(key, str) or not key.endswith(MASK_SUFFIX):
                raise ConfigError(
                    f"AdaLoRA's rank_pattern key {key!r} must name a module's singular values, '<module path>.lora_E'"
                    "; unlike LoRA's it is written by training (set init_r/target_r to choose ranks)"
                )
            if (not isinstance(mask, (list, tuple)) or len(mask) != self.init_r
                    or not all(isinstance(v, bool) or v in (0, 1) for v in mask)):
                raise ConfigError(
                    f"rank_pattern[{key!r}] must be a list of init_r={self.init_r} booleans (which singular triplets "
                    f"are kept), got {mask!r}"
                )
            self.rank_pattern[key] = [bool(v) for v in mask]

    # --- per-module values -----------------------------------------------------------------
    def mask_for(self, path: str, adapter_name: str | None = None) -> list[bool] | None:
        """The kept-triplet mask of the module at ``path``, if training wrote one."""
        if not self.rank_pattern:
            return None
        mask = self.rank_pattern.get(path + MASK_SUFFIX)
        if mask is None and adapter_name is not None:  # keys as PEFT holds them in memory
            mask = self.rank_pattern.get(f"{path}{MASK_SUFFIX}.{adapter_name}")
        return mask

    def rank_for(self, path: str) -> int:
        """Rank of the module's factors: the kept triplets under ``rank_pattern``, else ``init_r``."""
        mask = self.mask_for(path)
        return sum(mask) if mask is not None else self.init_r

    def alpha_for(self, path: str) -> float:
        """AdaLoRA has one alpha for every module (``alpha_pattern`` is ignored, as in PEFT)."""
        return self.lora_alpha

    def scaling_for(self, path: str, r: int | None = None) -> float:
        """The factor ΔW is multiplied with: ``lora_alpha`` (or the created rank when alpha is 0) / init_r.

        The rank in the divisor stays ``init_r`` even after pruning, so ranks can drop
        without rescaling the kept triplets.
        """
        created = r if r is not None else self.rank_for(path)
        numerator = self.lora_alpha if self.lora_alpha > 0 else float(created)
        return numerator / (self.init_r + 1e-5)

