"""``LoKrConfig``: PEFT's ``adapter_config.json`` for ``peft_type: "LOKR"``."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ...errors import ConfigError
from ..lycoris import LycorisConfig


@dataclasses.dataclass
class LoKrConfig(LycorisConfig):
    """ΔW = W1 ⊗ W2 · alpha/r, each Kronecker factor full or a low-rank product (rank ``r``)."""

    peft_type: ClassVar[str] = "LOKR"
    display_name: ClassVar[str] = "LoKr"
    init_choices: ClassVar[tuple[Any, ...]] = (True, False, "lycoris")

    decompose_both: bool = False
    decompose_factor: int = -1
    rank_dropout_scale: bool = False

    def validate(self) -> None:
        super().validate()
        f = self.decompose_factor
        if not isinstance(f, int) or isinstance(f, bool) or (f != -1 and f <= 0):
            raise ConfigError(f"`decompose_factor` must be -1 (near the square root) or a positive integer, got {f!r}")
