"""The LoKr layer: ΔW = W1 ⊗ W2, each factor full, a low-rank product or (W2 on Conv2d) a CP form."""

from __future__ import annotations

import torch
from torch import Tensor

from ..lycoris import LycorisLayer


class LoKrLayer(LycorisLayer):
    """LoKr around ``nn.Linear`` or ``nn.Conv2d``."""

    def rebuild(self, name: str) -> Tensor:
        f = self.factors[name]
        w1 = f["lokr_w1"] if "lokr_w1" in f else f["lokr_w1_a"] @ f["lokr_w1_b"]
        if "lokr_w2" in f:
            w2 = f["lokr_w2"]
        elif "lokr_t2" in f:
            w2 = torch.einsum("ijkl,ip,jr->prkl", f["lokr_t2"], f["lokr_w2_a"], f["lokr_w2_b"])
        else:
            w2 = f["lokr_w2_a"] @ f["lokr_w2_b"]
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        return torch.kron(w1, w2.contiguous())
