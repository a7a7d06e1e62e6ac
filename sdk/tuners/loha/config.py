"""``LoHaConfig``: PEFT's ``adapter_config.json`` for ``peft_type: "LOHA"``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ..lycoris import LycorisConfig


@dataclasses.dataclass
class LoHaConfig(LycorisConfig):
    """ΔW = (W1a·W1b) ⊙ (W2a·W2b) · alpha/r; on Conv2d with ``use_effective_conv2d`` each product is a CP
    decomposition with a core ``hada_t1``/``hada_t2`` over the kernel."""

    peft_type: ClassVar[str] = "LOHA"
    display_name: ClassVar[str] = "LoHa"
