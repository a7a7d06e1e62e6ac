"""The LoHa method's tuner: the factor shapes of a layer and PEFT's initialisation of them."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..lycoris import FactorShapes, LycorisLayer, LycorisTuner, kaiming
from .layers import LoHaLayer


def _effective(config: Any, kernel: tuple[int, ...]) -> bool:
    return bool(config.use_effective_conv2d) and bool(kernel) and tuple(kernel) != (1, 1)


class LoHaTuner(LycorisTuner):
    """The LoHa method's :class:`~sdk.methods.Tuner`."""

    method = "LOHA"
    factor_prefixes = ("hada_",)
    layer_cls: ClassVar[type[LycorisLayer]] = LoHaLayer

    def factor_shapes(self, config: Any, r: int, out_f: int, in_f: int, kernel: tuple[int, ...]) -> FactorShapes:
        if _effective(config, kernel):
            kh, kw = kernel
            core = ((r, r, kh, kw), ("r", "r", "kernel_h", "kernel_w"))
            return {
                "hada_t1": core, "hada_w1_a": ((r, out_f), ("r", "out_features")),
                "hada_w1_b": ((r, in_f), ("r", "in_features")),
                "hada_t2": core, "hada_w2_a": ((r, out_f), ("r", "out_features")),
                "hada_w2_b": ((r, in_f), ("r", "in_features")),
            }
        flat = in_f
        for k in kernel:
            flat *= k
        in_dim = "in_features" if not kernel else "in_features×kernel"
        return {
            "hada_w1_a": ((out_f, r), ("out_features", "r")), "hada_w1_b": ((r, flat), ("r", in_dim)),
            "hada_w2_a": ((out_f, r), ("out_features", "r")), "hada_w2_b": ((r, flat), ("r", in_dim)),
        }

    def init_factors(self, config: Any, factors: dict[str, Tensor]) -> None:
        """As PEFT: everything Kaiming-uniform except ``hada_w2_b`` = 0 (so ΔW starts at 0), unless
        ``init_weights`` is False."""
        for name, t in factors.items():
            if name == "hada_w2_b" and config.init_weights:
                torch.nn.init.zeros_(t)
            else:
                kaiming(t)

    def zero_at_init(self, key: str) -> bool:
        return key.endswith(".hada_w2_b")
