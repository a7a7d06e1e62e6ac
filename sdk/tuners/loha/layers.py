"""The LoHa layer: ΔW rebuilt from Hadamard-multiplied low-rank products (plain or CP form on Conv2d)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..lycoris import LycorisLayer


class LoHaLayer(LycorisLayer):
    """LoHa around ``nn.Linear`` or ``nn.Conv2d``."""

    def rebuild(self, name: str) -> Tensor:
        f = self.factors[name]
        if "hada_t1" in f:  # CP form: out×in×kh×kw from a core over the kernel
            one = torch.einsum("ijkl,jr,ip->prkl", f["hada_t1"], f["hada_w1_b"], f["hada_w1_a"])
            two = torch.einsum("ijkl,jr,ip->prkl", f["hada_t2"], f["hada_w2_b"], f["hada_w2_a"])
            return one * two
        return (f["hada_w1_a"] @ f["hada_w1_b"]) * (f["hada_w2_a"] @ f["hada_w2_b"])
