"""Arrow's per-expert math, shared by the SDK's router and the registry (which stores prototypes).

An Arrow prototype is the top right singular vector of an expert's ΔW = B·A on one layer: a direction in
the layer's input space. As PEFT does, it is found by power iteration on ΔWᵀΔW = Aᵀ(BᵀB)A (15 steps in
float32, started from a normal vector drawn with a private generator seeded with ``rng_seed``), which
never forms ΔW. Without a seed PEFT starts from the global RNG; we then return the exact vector (the
iteration's limit) through a thin QR of Aᵀ and an r×r SVD, so the result is deterministic and a
prototype stored by the registry equals one computed locally.

General knowledge subtraction (GKS) as PEFT defines it: the mean of the general adapters' A factors is
subtracted from each task expert's A, and the mean of their B factors from its B (factor by factor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

#: Power-iteration steps and the norm guard (PEFT's values).
POWER_STEPS = 15
EPS = 1e-8


@torch.no_grad()
def expert_prototype(a: Tensor, b: Tensor, rng_seed: int | None) -> Tensor:
    """The top right singular vector of ``b @ a`` (``a``: r×in, ``b``: out×r) in float32, length ``in``."""
    a32, b32 = a.detach().to(torch.float32), b.detach().to(torch.float32)
    if rng_seed is None:
        q, r = torch.linalg.qr(a32.T)  # a = rᵀ qᵀ, so b·a = (b rᵀ) qᵀ
        _, _, vh = torch.linalg.svd(b32 @ r.T, full_matrices=False)
        return q @ vh[0]
    gen = torch.Generator(device=a32.device.type)
    gen.manual_seed(int(rng_seed))
    gram = b32.T @ b32
    v = torch.randn(a32.shape[1], dtype=torch.float32, device=a32.device, generator=gen)
    v = v / (v.norm() + EPS)
    for _ in range(POWER_STEPS):
        w = a32.T @ (gram @ (a32 @ v))
        v = w / (w.norm() + EPS)
    return v


@torch.no_grad()
def general_mean(factors: Sequence[Tensor]) -> Tensor:
    """The mean of the general adapters' A (or B) factors on one layer."""
    return torch.stack([f.detach() for f in factors], dim=0).mean(0)


@torch.no_grad()
def library_prototypes(
    experts: Sequence[Mapping[str, tuple[Tensor, Tensor]]],
    general: Sequence[Mapping[str, tuple[Tensor, Tensor]]],
    use_gks: bool,
    rng_seed: int | None,
) -> dict[str, Tensor]:
    """Every layer's prototypes, ``path -> (E, in)`` float32 in expert order, from each expert's
    ``path -> (A, B)`` (after GKS with the ``general`` adapters when ``use_gks``)."""
    out: dict[str, Tensor] = {}
    for path in experts[0]:
        avg = None
        if use_gks and general:
            avg = (general_mean([g[path][0] for g in general]), general_mean([g[path][1] for g in general]))
        rows = []
        for expert in experts:
            a, b = expert[path]
            if avg is not None:
                a, b = a.to(avg[0].dtype) - avg[0], b.to(avg[1].dtype) - avg[1]
            rows.append(expert_prototype(a, b, rng_seed))
        out[path] = torch.stack(rows, dim=0)
    return out
