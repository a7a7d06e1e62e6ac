"""Eager mixed batches: layers that read the same input (q, k and v of an attention block) share its group
layout and, from their second call on, one down-projection ``bmm`` over their A factors side by side.

Which layers share an input is learnt, not assumed from names or structure: each call records, per input
tensor, the stacks (:class:`~sdk.grouped.GroupedWeights`) that read it, in order. The first of them, the
leader, keeps its followers; on a later call it multiplies the input once by its own and its followers' A
concatenated along the rank (built once, kept while they stay the same stack objects), and each follower takes
its columns. A layer the plan does not name at its place (another mix, changed weights, another data flow)
runs its own ``bmm``, and the leader plans from what this call saw the next time.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .grouped import GroupedWeights

#: Fuse the down-projections of layers that share an input (off only to measure what fusing buys:
#: ``bench/ab_mixed_eager.py --fuse-ab``).
FUSE = True

#: How many times one leader stack may (re)build its fused A before it stops fusing (a data flow that changes
#: every call, like a layer reused with other siblings, would otherwise copy the factors on every call).
MAX_PLANS = 4


@dataclass(eq=False)
class FusedDown:
    """A leader's plan: its followers (weakly held, in reading order) and all their A side by side."""

    followers: tuple[weakref.ref[GroupedWeights], ...]
    a: Tensor  # (U, in, Σ ranks): the leader's columns first
    starts: tuple[int, ...]  # column where each stack's part starts, leader first, then the end


@dataclass(eq=False)
class SharedInput:
    """One input of a routed call in group order, and what the layers reading it did with it."""

    x: Tensor
    version: int
    xs: Tensor  # (U, G·rows, in)
    readers: list[GroupedWeights] = field(default_factory=list)
    plan: FusedDown | None = None
    down: Tensor | None = None  # xs times the plan's A


def _as(xs: Tensor, like: Tensor) -> Tensor:
    return xs if xs.dtype == like.dtype else xs.to(like.dtype)


def _plan(leader: GroupedWeights) -> FusedDown | None:
    """The leader's fused A for the followers it saw last call, reused or (re)built; None when there is none."""
    seen = leader.followers
    if not seen or not FUSE:
        return None
    plan = leader.fused
    if plan is not None and len(plan.followers) == len(seen) and all(
            p() is s() for p, s in zip(plan.followers, seen, strict=True)):
        return plan
    stacks = [leader, *(s() for s in seen)]
    if leader.plans >= MAX_PLANS or any(s is None for s in stacks):
        return None
    a = leader.a
    if any(s.a.dtype != a.dtype or s.a.device != a.device or s.a.shape[:2] != a.shape[:2] for s in stacks):
        return None
    starts = [0]
    for s in stacks:
        starts.append(starts[-1] + s.a.shape[-1])
    with torch.no_grad():
        fused = torch.cat([s.a for s in stacks], dim=2)
    leader.fused = FusedDown(seen, fused, tuple(starts))
    leader.plans += 1
    return leader.fused


def down_projection(shared: SharedInput, w: GroupedWeights, a: Tensor, groups: int) -> Tensor:
    """``shared.xs`` times ``a`` (``w.a``, or its first ``groups`` groups): the leader's fused ``bmm`` or a
    column slice of it when ``w`` is planned at its place among the input's readers, else a ``bmm`` of its own."""
    readers = shared.readers
    readers.append(w)
    xs = shared.xs
    if len(readers) == 1:  # the leader
        plan = _plan(w)
        w.followers = ()  # this call's followers, recorded as they come
        if plan is not None:
            fused = plan.a if plan.a.shape[0] == groups else plan.a[:groups]
            shared.plan, shared.down = plan, torch.bmm(_as(xs, fused), fused)
            return shared.down[..., : plan.starts[1]]
        return torch.bmm(_as(xs, a), a)
    leader = readers[0]
    leader.followers = (*leader.followers, weakref.ref(w))
    plan, k = shared.plan, len(readers) - 1
    if plan is not None and shared.down is not None and k < len(plan.starts) - 1 and plan.followers[k - 1]() is w:
        return shared.down[..., plan.starts[k]: plan.starts[k + 1]]
    return torch.bmm(_as(xs, a), a)
