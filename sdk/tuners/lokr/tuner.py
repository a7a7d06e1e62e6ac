"""The LoKr method's tuner: PEFT's split of a layer's dimensions into Kronecker factors, the factor
shapes that follow, and PEFT's initialisation of them."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..lycoris import FactorShapes, LycorisLayer, LycorisTuner, kaiming
from .layers import LoKrLayer


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """Split ``dimension`` into ``(m, n)``, ``m·n = dimension``, ``m <= n``: ``factor`` itself when it
    divides; otherwise the divisor pair closest to the square root whose smaller part stays ``<= factor``."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    limit = dimension if factor == -1 else factor
    m, n = 1, dimension
    while m < n:
        nxt = m + 1
        while dimension % nxt:
            nxt += 1
        if nxt + dimension // nxt > m + n or nxt > limit:
            break
        m, n = nxt, dimension // nxt
    return (n, m) if m > n else (m, n)


class LoKrTuner(LycorisTuner):
    """The LoKr method's :class:`~sdk.methods.Tuner`."""

    method = "LOKR"
    factor_prefixes = ("lokr_",)
    layer_cls: ClassVar[type[LycorisLayer]] = LoKrLayer

    def factor_shapes(self, config: Any, r: int, out_f: int, in_f: int, kernel: tuple[int, ...]) -> FactorShapes:
        in_m, in_n = factorization(in_f, config.decompose_factor)
        out_l, out_k = factorization(out_f, config.decompose_factor)
        shapes: FactorShapes = {}
        if config.decompose_both and r < max(out_l, in_m) / 2:
            shapes["lokr_w1_a"] = ((out_l, r), ("out_features/b", "r"))
            shapes["lokr_w1_b"] = ((r, in_m), ("r", "in_features/d"))
        else:
            shapes["lokr_w1"] = ((out_l, in_m), ("out_features/b", "in_features/d"))
        full_w2 = not r < max(out_k, in_n) / 2
        if full_w2:
            shapes["lokr_w2"] = ((out_k, in_n, *kernel), ("b", "d", *("kernel_h", "kernel_w")[: len(kernel)]))
        elif kernel and config.use_effective_conv2d and tuple(kernel) != (1, 1):
            kh, kw = kernel
            shapes["lokr_t2"] = ((r, r, kh, kw), ("r", "r", "kernel_h", "kernel_w"))
            shapes["lokr_w2_a"] = ((r, out_k), ("r", "b"))
            shapes["lokr_w2_b"] = ((r, in_n), ("r", "d"))
        else:
            flat = in_n
            for k in kernel:
                flat *= k
            shapes["lokr_w2_a"] = ((out_k, r), ("b", "r"))
            shapes["lokr_w2_b"] = ((r, flat), ("r", "d×kernel" if kernel else "d"))
        return shapes

    def init_factors(self, config: Any, factors: dict[str, Tensor]) -> None:
        """As PEFT: default init zeroes W1 (or W1a); ``"lycoris"`` zeroes W2 (or W2b); False randomises all."""
        if config.init_weights is True:
            zero = {"lokr_w1", "lokr_w1_a"}
        elif config.init_weights == "lycoris":
            zero = {"lokr_w2", "lokr_w2_b"}
        else:
            zero = set()
        for name, t in factors.items():
            if name in zero:
                torch.nn.init.zeros_(t)
            else:
                kaiming(t)

    def zero_at_init(self, key: str) -> bool:
        return key.endswith((".lokr_w1", ".lokr_w1_a"))
