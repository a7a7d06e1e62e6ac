"""Mixed batches: which adapter each sample of a batch uses, while a forward runs.

``AdapterModel`` sets :data:`ROUTING` around a forward with ``adapter_names=[...]``; adapter
modules read it and apply each adapter to its own rows only (``__base__``: no adapter).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import MixedBatchError

#: The adapter name that means "no adapter" for a sample of a mixed batch.
BASE_ADAPTER = "__base__"


@dataclass
class Routing:
    """Which adapter each sample of a batch uses; index tensors are built once per device."""

    names: tuple[str, ...]
    unique: tuple[str, ...] = ()
    _indices: dict[torch.device, dict[str, Tensor]] = field(default_factory=dict)
    _padded: dict[torch.device, tuple[Tensor, Tensor, Tensor, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[str, None] = {}
        for n in self.names:
            if n != BASE_ADAPTER:
                seen.setdefault(n, None)
        self.unique = tuple(seen)

    def check_batch(self, batch: int) -> None:
        """Refuse a batch whose size differs from the number of names."""
        if batch != len(self.names):
            raise MixedBatchError(
                f"adapter_names has {len(self.names)} entries but the batch has {batch} samples; "
                "give exactly one adapter name per sample ('__base__' for none)"
            )

    def indices(self, device: torch.device) -> dict[str, Tensor]:
        """Sample indices of each adapter (``__base__`` excluded)."""
        got = self._indices.get(device)
        if got is None:
            got = {
                u: torch.tensor([i for i, n in enumerate(self.names) if n == u], dtype=torch.long, device=device)
                for u in self.unique
            }
            self._indices[device] = got
        return got

    def padded(self, device: torch.device) -> tuple[Tensor, Tensor | None, Tensor, int]:
        """Index tables for a grouped batched matmul.

        Returns ``(gather, keep, target, G)``: ``gather`` (U·G) lists each adapter's samples
        padded to G with sample 0; ``keep`` are the positions in it that are real samples (None
        when no group needed padding) and ``target`` the sample each of those belongs to.
        """
        got = self._padded.get(device)
        if got is None:
            groups = [[i for i, n in enumerate(self.names) if n == u] for u in self.unique]
            g = max((len(x) for x in groups), default=0)
            gather: list[int] = []
            keep: list[int] = []
            target: list[int] = []
            for u, members in enumerate(groups):
                gather.extend(members + [0] * (g - len(members)))
                keep.extend(range(u * g, u * g + len(members)))
                target.extend(members)

            def as_tensor(v: list[int]) -> Tensor:
                return torch.tensor(v, dtype=torch.long, device=device)

            padding = len(keep) != len(gather)
            got = (as_tensor(gather), as_tensor(keep) if padding else None, as_tensor(target), g)
            self._padded[device] = got
        return got


ROUTING: ContextVar[Routing | None] = ContextVar("adapter_routing", default=None)
