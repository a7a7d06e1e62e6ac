"""``IA3Config``: PEFT's ``adapter_config.json`` for ``peft_type: "IA3"``."""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

from ...config import AdapterConfig
from ...errors import ConfigError
from ..config_checks import normalise_name_lists

#: PEFT's defaults per ``model_type`` when ``target_modules`` / ``feedforward_modules`` are unset.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "llama": ["k_proj", "v_proj", "down_proj"],
    "mistral": ["k_proj", "v_proj", "down_proj"],
    "qwen2": ["q_proj", "v_proj", "down_proj"],
    "qwen3": ["q_proj", "v_proj", "down_proj"],
    "gemma": ["q_proj", "v_proj", "down_proj"],
    "gpt2": ["c_attn", "mlp.c_proj"],
    "opt": ["q_proj", "k_proj", "fc2"],
    "bert": ["key", "value", "output.dense"],
    "roberta": ["key", "value", "output.dense"],
    "t5": ["k", "v", "wo"],
}
DEFAULT_FEEDFORWARD: dict[str, list[str]] = {
    "llama": ["down_proj"],
    "mistral": ["down_proj"],
    "qwen2": ["down_proj"],
    "qwen3": ["down_proj"],
    "gemma": ["down_proj"],
    "gpt2": ["mlp.c_proj"],
    "opt": ["fc2"],
    "bert": ["output.dense"],
    "roberta": ["output.dense"],
    "t5": ["wo"],
}


@dataclasses.dataclass
class IA3Config(AdapterConfig):
    """(IA)³: learned vectors that rescale a layer's output, or its input for ``feedforward_modules``."""

    peft_type: ClassVar[str] = "IA3"
    display_name: ClassVar[str] = "IA³"

    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    feedforward_modules: list[str] | str | None = None
    fan_in_fan_out: bool = False
    modules_to_save: list[str] | None = None
    init_ia3_weights: bool = True

    def validate(self) -> None:
        normalise_name_lists(self, "target_modules", "exclude_modules", "feedforward_modules", "modules_to_save")
        if (isinstance(self.feedforward_modules, list) and isinstance(self.target_modules, list)
                and not set(self.feedforward_modules) <= set(self.target_modules)):
            extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
            raise ConfigError(f"`feedforward_modules` must be a subset of `target_modules`; {extra} are not targeted")
        if not isinstance(self.init_ia3_weights, bool):
            raise ConfigError(f"`init_ia3_weights` must be true or false, got {self.init_ia3_weights!r}")

    def is_feedforward(self, path: str, model_type: str | None = None) -> bool:
        """Whether the module at ``path`` scales its input (PEFT: regex full match, or a name ending)."""
        ff = self.feedforward_modules
        if ff is None:
            ff = DEFAULT_FEEDFORWARD.get(model_type or "", [])
        if isinstance(ff, str):
            return re.fullmatch(ff, path) is not None
        return any(path.endswith(name) for name in ff)
