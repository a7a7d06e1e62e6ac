"""``PolyConfig``: PEFT's ``adapter_config.json`` for ``peft_type: "POLY"`` (Polytropon / multi-head routing)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ...config import AdapterConfig
from ...errors import ConfigError
from ..config_checks import check_positive_int, normalise_name_lists

#: Bounds on the router's size: tasks (rows of ``module_logits``), skills per layer, splits per skill.
MAX_TASKS = 65_536
MAX_SKILLS = 256
MAX_SPLITS = 64


@dataclasses.dataclass
class PolyConfig(AdapterConfig):
    """Poly: ``n_skills`` LoRA modules per layer mixed per sample by a learned router over ``n_tasks`` tasks.

    Each sample's ``task_ids`` entry picks a row of every layer's ``module_logits``; ``n_splits > 1``
    is multi-head routing (each slice of the input and output features has its own mixture).
    """

    peft_type: ClassVar[str] = "POLY"
    display_name: ClassVar[str] = "Poly"

    r: int = 8
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None
    init_weights: bool = True
    poly_type: str = "poly"
    n_tasks: int = 1
    n_skills: int = 4
    n_splits: int = 1

    def validate(self) -> None:
        normalise_name_lists(self, "target_modules", "exclude_modules", "modules_to_save")
        check_positive_int("`r`", self.r)
        for name, high in (("n_tasks", MAX_TASKS), ("n_skills", MAX_SKILLS), ("n_splits", MAX_SPLITS)):
            value = getattr(self, name)
            check_positive_int(f"`{name}`", value)
            if value > high:
                raise ConfigError(f"`{name}` is {value}; at most {high} is supported")
        if self.poly_type != "poly":
            raise ConfigError(f"`poly_type` must be 'poly' (the only router PEFT defines), got {self.poly_type!r}")
        if not isinstance(self.init_weights, bool):
            raise ConfigError(f"`init_weights` must be true or false, got {self.init_weights!r}")
