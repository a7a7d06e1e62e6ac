"""Mixed batches: which adapter each sample of a batch uses, while a forward runs.

``AdapterModel`` builds one :class:`Routing` per call with ``adapter_names=[...]`` and hands it to
every adapter module (``begin_routing``) before the base model runs, and takes it back
(``end_routing``) afterwards. Modules keep what they need as plain attributes, so their forward
reads no context variable or thread-local and ``torch.compile`` traces it without a graph break:
the routing's index tensors become graph inputs, so a new assignment of adapters to samples (same
batch size) reuses the compiled graph.

Because the routing lives on the model's modules for the duration of a call, calls on one model
must not overlap with a routed call: :class:`RoutingGate` serialises a routed call against every
other call of the same model (calls without ``adapter_names`` still run concurrently with each
other). Asyncio needs nothing extra: a forward never yields to the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import MixedBatchError

#: The adapter name that means "no adapter" for a sample of a mixed batch.
BASE_ADAPTER = "__base__"


@dataclass(eq=False)
class Routing:
    """Which adapter each sample of a batch uses, as index tensors on the input's device.

    Samples are grouped by adapter (``unique``, in order of first appearance; ``__base__`` samples
    belong to no group) and every group is padded to the largest group's size ``G``, so that a
    layer can run one batched matmul over the ``U`` groups (``group_names``):

    - ``gather`` (U, G): the samples of group 0, then of group 1, …; a padding entry repeats the
      group's first sample;
    - ``slot`` (batch): 0 for a ``__base__`` sample, ``1 + u`` for a sample of group ``u``;
    - ``back`` (batch): where each sample's row lies in group order (``u·G + j``; 0 for a ``__base__``
      sample), so that the grouped rows return to their samples by a gather instead of a scatter;
    - ``own`` (batch): 1.0 for a sample with an adapter and 0.0 for a ``__base__`` one;
    - ``members``: each adapter's sample indices (for layers that loop over adapters).

    ``U`` and ``G`` are at least 2 whenever some sample has an adapter (a filler group named
    ``__base__``, whose rows are all padding, makes up a second group), and ``gather``'s sizes are
    marked dynamic: one compiled graph then serves every mix of adapters for a given input shape,
    instead of a graph per group count or per group size.

    Eager forwards need no such shape guarantee, so they use a tighter layout: ``eager_gather`` (flat,
    ``eager_groups`` groups of ``eager_size`` rows, no filler group, no minimum size) and ``eager_back``,
    the same tensors as ``gather``/``back`` when both layouts coincide (every mix with two or more
    adapters and some adapter used by two or more samples); ``eager_pick`` (batch) is each sample's
    group (0 for a ``__base__`` sample, whose rows a layer zeroes). ``has_base`` says whether some
    sample uses no adapter. ``eager_grid`` is ``(su, sj)`` when the eager layout puts sample
    ``u·su + j·sj`` at row ``j`` of group ``u`` and covers every sample exactly once (no ``__base__``
    sample, no padding: adapters in blocks, ``(G, 1)``, or taking turns, ``(1, U)``); layers then read
    and write the groups through strided views instead of gathering rows (None otherwise).
    """

    names: tuple[str, ...]
    unique: tuple[str, ...]
    batch: int
    gather: Tensor
    slot: Tensor
    back: Tensor
    own: Tensor
    eager_gather: Tensor
    eager_back: Tensor
    eager_pick: Tensor
    eager_groups: int
    eager_size: int
    has_base: bool
    members: dict[str, Tensor]
    eager_grid: tuple[int, int] | None = None
    #: The last input gathered into group order and the result (layers that share an input, like q/k/v
    #: projections, gather it once in eager mode; compiled, each layer gathers its own copy: inductor writes
    #: q/k/v's gathered input three times, one kernel, ~0.3% of a 64 x 1 forward, left as it is).
    _gathered: tuple[Tensor, int, Tensor] | None = field(default=None, repr=False)

    @property
    def groups(self) -> int:
        """Number of groups (U), filler group included."""
        return self.gather.shape[0]

    @property
    def group_size(self) -> int:
        """Rows per group after padding (G)."""
        return self.gather.shape[1]

    @property
    def group_names(self) -> tuple[str, ...]:
        """The adapter of each group: ``unique``, then ``__base__`` for a filler group."""
        return self.unique + (BASE_ADAPTER,) * (self.groups - len(self.unique))

    @classmethod
    def build(cls, names: Sequence[str], device: torch.device | str = "cpu") -> Routing:
        """The routing of a batch whose sample ``i`` uses adapter ``names[i]``."""
        names = tuple(names)
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            if n != BASE_ADAPTER:
                groups.setdefault(n, []).append(i)
        members_of = list(groups.values())
        largest = max((len(v) for v in members_of), default=0)
        if len(members_of) == 1:
            members_of.append([])  # the filler group: padding only
        g = max(largest, 2) if groups else 0
        gather, slot, back = _layout(members_of, g, len(names))

        def as_tensor(v: list[int]) -> Tensor:
            return torch.tensor(v, dtype=torch.long, device=device)

        gather_t = as_tensor(gather).view(len(members_of) if groups else 0, g)
        back_t = as_tensor(back)
        if groups:
            torch._dynamo.mark_dynamic(gather_t, (0, 1))
        if len(members_of) == len(groups) and g == largest:  # the compiled layout has no filler, no forced size
            e_gather = gather
            eager_gather, eager_back = gather_t.view(-1), back_t
        else:
            e_gather, _, e_back = _layout(members_of[: len(groups)], largest, len(names))
            eager_gather, eager_back = as_tensor(e_gather), as_tensor(e_back)
        return cls(
            names=names,
            unique=tuple(groups),
            batch=len(names),
            gather=gather_t,
            slot=as_tensor(slot),
            back=back_t,
            own=torch.tensor([float(k > 0) for k in slot], device=device),
            eager_gather=eager_gather,
            eager_back=eager_back,
            eager_pick=as_tensor([max(k - 1, 0) for k in slot]),
            eager_groups=len(groups),
            eager_size=largest,
            has_base=len(names) > sum(len(v) for v in members_of),
            members={n: as_tensor(v) for n, v in groups.items()},
            eager_grid=_grid(e_gather, len(groups), largest, len(names)),
        )

    def end_call(self) -> None:
        """Forget the input gathered during the call that ends (a cached routing must not keep it alive)."""
        self._gathered = None

    def check_batch(self, batch: int) -> None:
        """Refuse a batch whose size differs from the number of names."""
        if batch != self.batch:
            raise MixedBatchError(
                f"adapter_names has {self.batch} entries but the batch has {batch} samples; "
                "give exactly one adapter name per sample ('__base__' for none)"
            )


def _grid(order: list[int], groups: int, size: int, batch: int) -> tuple[int, int] | None:
    """``(su, sj)`` when ``order`` (the eager gather, flat: ``groups`` groups of ``size`` rows, each sample once
    when they hold ``batch`` rows) is ``u·su + j·sj`` at group ``u``, row ``j``; None otherwise."""
    if groups * size != batch or not batch or order[0] != 0:
        return None
    sj = order[1] if size > 1 else 1
    su = order[size] if groups > 1 else size * sj
    ok = all(order[u * size + j] == u * su + j * sj for u in range(groups) for j in range(size))
    return (su, sj) if ok else None


def _layout(members_of: list[list[int]], g: int, batch: int
            ) -> tuple[list[int], list[int], list[int]]:
    """``gather``, ``slot`` and ``back`` (see :class:`Routing`) for these groups padded to ``g`` rows."""
    gather: list[int] = []
    slot = [0] * batch
    back = [0] * batch
    for u, members in enumerate(members_of):
        first = members[0] if members else 0
        gather += members + [first] * (g - len(members))
        for j, i in enumerate(members):
            slot[i] = u + 1
            back[i] = u * g + j
    return gather, slot, back


class RoutingCache:
    """The routings of a model's last few mixed batches, by adapter names and device.

    A decode loop whose batch keeps the same requests from one step to the next then builds its routing once
    instead of at every step. A :class:`Routing` holds nothing else that changes between calls (its last
    gathered input is dropped when a call ends), so one serves every call with the same names.
    """

    #: Routings kept; the one used least recently is dropped first.
    SIZE = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[tuple[str, ...], str], Routing] = {}

    def get(self, names: tuple[str, ...], device: torch.device | str) -> Routing:
        """The routing of a batch whose sample ``i`` uses ``names[i]``, built on first use."""
        key = (names, str(device))
        with self._lock:
            routing = self._by_key.pop(key, None)
            if routing is not None:
                self._by_key[key] = routing  # now the most recently used
                return routing
        routing = Routing.build(names, device)
        with self._lock:
            while len(self._by_key) >= self.SIZE:
                del self._by_key[next(iter(self._by_key))]
            return self._by_key.setdefault(key, routing)

    def __deepcopy__(self, memo: dict[int, object]) -> RoutingCache:
        return RoutingCache()  # a copied model starts with no routings of its own

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]


class RoutingGate:
    """Keeps a routed call of a model from overlapping any other call of the same model.

    Plain calls (no routing) enter together; a routed call waits until none runs and keeps new
    ones out until it ends. A call nested inside a routed call on the same thread (a hook that calls
    the model again) enters at once, as it would have in the same context.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._plain = 0
        self._owner: int | None = None
        self._waiting = 0  # routed calls waiting: new plain calls let them go first

    def acquire(self, routed: bool) -> bool:
        """Enter for one call (``routed``: it sets a routing); returns the token to :meth:`release` with."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:  # nested in this thread's routed call
                return False
            if routed:
                self._waiting += 1
                while self._owner is not None or self._plain:
                    self._cond.wait()
                self._waiting -= 1
                self._owner = me
            else:
                while self._owner is not None or self._waiting:
                    self._cond.wait()
                self._plain += 1
            return True

    def release(self, routed: bool, token: bool) -> None:
        """Leave again (``token``: what :meth:`acquire` returned)."""
        if not token:
            return
        with self._cond:
            if routed:
                self._owner = None
            else:
                self._plain -= 1
            self._cond.notify_all()

    def __deepcopy__(self, memo: dict[int, object]) -> RoutingGate:
        return RoutingGate()  # a copied model is another model: it gets a gate of its own

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]
