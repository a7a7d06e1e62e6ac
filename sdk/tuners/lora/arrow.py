"""Arrow: training-free routing over a library of LoRA experts, per token and per adapted layer.

PEFT's design and names (``ArrowConfig``, ``create_arrow_model``, the ``arrow_router`` adapter): the
experts are ordinary LoRA adapters ``task_0``, ``task_1``… (and ``gks_0``… for general knowledge
subtraction), and one more LoRA adapter, ``arrow_router``, whose config carries ``arrow_config``. When
``arrow_router`` is active, each adapted Linear/Conv1D layer gives every token the top-k experts by
|⟨x, prototype⟩|, weighs them with a softmax at ``router_temperature`` and adds their scaled outputs.

:class:`ArrowRouter` sits in the layer's ``lora_arrow`` dict. It keeps, per layer, one fused matrix
(the E prototypes above the E·r rows of every expert's A) and the experts' B side by side, so a
forward is two dense matmuls of rank E·r plus a top-k, instead of PEFT's per-expert ``(t, E, out)``
intermediate. The fused weights are rebuilt when experts are added or removed, or when an expert's
weights change in place; prototypes are recomputed only for experts whose weights changed (or taken
from the registry, see :meth:`ArrowRouter.give_prototypes`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import AdapterStateError, ConfigError
from ...layers import VersionedCache
from .arrow_math import expert_prototype, general_mean

if TYPE_CHECKING:
    from .layers import LoraLayer

#: The router adapter's name and the experts' name prefixes (PEFT's).
ROUTER_NAME = "arrow_router"
TASK_PREFIX = "task_"
GKS_PREFIX = "gks_"


@dataclass
class ArrowConfig:
    """Arrow's parameters (PEFT's ``ArrowConfig``); the adapter-name lists are filled by ``create_arrow_model``."""

    top_k: int = 3
    router_temperature: float = 1.0
    use_gks: bool = False
    rng_seed: int | None = None
    task_adapter_names: list[str] | None = field(default=None, init=False)
    gks_adapter_names: list[str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k <= 0:
            raise ConfigError(f"arrow top_k must be a positive integer, got {self.top_k!r}")
        t = self.router_temperature
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not t > 0 or t == float("inf"):
            raise ConfigError(f"arrow router_temperature must be a positive number, got {t!r}")
        if not isinstance(self.use_gks, bool):
            raise ConfigError(f"arrow use_gks must be true or false, got {self.use_gks!r}")
        if self.rng_seed is not None and (not isinstance(self.rng_seed, int) or isinstance(self.rng_seed, bool)):
            raise ConfigError(f"arrow rng_seed must be an integer or null, got {self.rng_seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form PEFT writes inside ``adapter_config.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArrowConfig:
        """Parse PEFT's JSON form; unknown keys are an error naming them."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"arrow_config must be an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"arrow_config has unknown keys {unknown}")
        init = {k: data[k] for k in ("top_k", "router_temperature", "use_gks", "rng_seed") if k in data}
        config = cls(**init)
        for key in ("task_adapter_names", "gks_adapter_names"):
            names = data.get(key)
            if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
                raise ConfigError(f"arrow_config.{key} must be a list of adapter names, got {names!r}")
            setattr(config, key, list(names) if names is not None else None)
        return config


@dataclass(eq=False)
class _Fused:
    """One layer's routing weights: ``a`` (E + E·r, in) = prototypes over the stacked A's; ``b`` (out, E·r)."""

    experts: int
    rank: int
    a: Tensor
    b: Tensor
    scales: Tensor  # (E,)


class ArrowRouter(nn.Module):
    """The Arrow router of one LoRA layer (in ``layer.lora_arrow[name]``)."""

    def __init__(self, config: ArrowConfig) -> None:
        super().__init__()
        self.config = config
        self.general: tuple[str, ...] = tuple(config.gks_adapter_names or ())
        #: Task experts in routing order; None: derive from the layer (every adapter but routers and gks_N).
        self._experts: tuple[str, ...] = tuple(config.task_adapter_names or ())
        self._purified: set[str] = set()  # experts GKS has been applied to
        self._protos: dict[str, tuple[tuple[int, int] | None, Tensor]] = {}
        self._cache: VersionedCache[_Fused] = VersionedCache()
        self._fused: _Fused | None = None

    # --- bookkeeping ------------------------------------------------------------------------
    @property
    def experts(self) -> tuple[str, ...]:
        """The task experts this router routes over, in order."""
        return self._experts

    def adapters_changed(self, layer: LoraLayer) -> None:
        """Adapters were added to or removed from ``layer``: route over the task experts present now
        (as PEFT: every adapter except routers and ``gks_<n>``), refreshing prototypes lazily."""
        routers = layer._modules.get("lora_arrow") or {}
        present = [n for n in layer.lora_A if n not in routers and not _is_general(n)]
        if list(self._experts) == present:
            return
        self._experts = tuple(present)
        for gone in set(self._protos) - set(present):
            del self._protos[gone]
        self._purified &= set(present)
        self._cache.clear()
        self._fused = None

    def give_prototypes(self, prototypes: Mapping[str, Tensor]) -> None:
        """Use these prototypes (expert name -> (in,) vector, computed after GKS, e.g. by the registry)
        instead of computing them; they are dropped once the expert's weights change."""
        for name, vec in prototypes.items():
            self._protos[name] = (None, vec.detach().to(torch.float32).reshape(-1))
        self._cache.clear()
        self._fused = None

    # --- building ---------------------------------------------------------------------------
    def _apply_gks(self, layer: LoraLayer) -> None:
        todo = [n for n in self._experts if n not in self._purified]
        if not todo:
            return
        if self.config.use_gks:
            missing = [g for g in self.general if g not in layer.lora_A]
            if missing or not self.general:
                raise AdapterStateError(f"Arrow GKS needs the general adapters {missing or 'gks_<n>'} on this layer")
            avg_a = general_mean([layer.lora_A[g] for g in self.general])
            avg_b = general_mean([layer.lora_B[g] for g in self.general])
            with torch.no_grad():
                for name in todo:
                    layer.lora_A[name].sub_(avg_a)
                    layer.lora_B[name].sub_(avg_b)
        self._purified.update(todo)

    def _prototype(self, layer: LoraLayer, name: str) -> Tensor:
        a, b = layer.lora_A[name], layer.lora_B[name]
        stamp = (a._version, b._version)
        known = self._protos.get(name)
        if known is not None and known[0] in (None, stamp):
            vec = known[1]
        else:
            vec = expert_prototype(a, b, self.config.rng_seed)
        self._protos[name] = (stamp, vec)
        return vec

    def _build(self, layer: LoraLayer) -> tuple[_Fused, list[Tensor]]:
        if not self._experts:
            raise AdapterStateError("the Arrow router has no task experts left on this layer")
        if self.config.top_k > len(self._experts):
            raise AdapterStateError(f"Arrow top_k={self.config.top_k} but only {len(self._experts)} task experts "
                                    "are loaded; add experts or lower top_k")
        self._apply_gks(layer)
        a_list = [layer.lora_A[n] for n in self._experts]
        b_list = [layer.lora_B[n] for n in self._experts]
        ranks = {a.shape[0] for a in a_list}
        if len(ranks) != 1:
            raise AdapterStateError(f"Arrow experts must share one rank per layer, got ranks {sorted(ranks)}")
        dtype = a_list[0].dtype
        with torch.no_grad():
            protos = torch.stack([self._prototype(layer, n) for n in self._experts]).to(dtype)
            a = torch.cat([protos, *[t.detach() for t in a_list]], dim=0)
            b = torch.cat([t.detach() for t in b_list], dim=1)
            scales = torch.tensor([float(layer.scaling[n]) for n in self._experts], dtype=dtype, device=a.device)
        fused = _Fused(len(self._experts), ranks.pop(), a, b, scales)
        return fused, a_list + b_list

    def prepare(self, layer: LoraLayer) -> _Fused:
        """The fused routing weights, rebuilt if experts or their weights changed (eager mode)."""
        if torch.compiler.is_compiling() and self._fused is not None:
            return self._fused
        self._fused = self._cache.get(self._experts, lambda: self._build(layer))
        return self._fused

    @property
    def prototypes(self) -> Tensor:
        """The current prototypes (E, in); call after a forward or :meth:`prepare`."""
        if self._fused is None:
            raise AdapterStateError("prototypes are built on the first forward (or prepare())")
        return self._fused.a[: self._fused.experts]

    # --- forward -------------------------------------------------------------------------------
    def forward(self, layer: LoraLayer, x: Tensor, result: Tensor, dropout: float) -> Tensor:
        """``result`` plus the routed mixture of experts for every token of ``x``."""
        w = self.prepare(layer)
        e, r = w.experts, w.rank
        tok = x.reshape(-1, x.shape[-1]).to(w.a.dtype)
        h = tok @ w.a.T  # (t, E + E·r): similarities, then every expert's A·x
        sim = h[:, :e].abs()
        top, idx = torch.topk(sim, self.config.top_k, dim=1)
        coeff = torch.softmax(top / self.config.router_temperature, dim=1) * w.scales[idx]
        gate = torch.zeros_like(sim).scatter_(1, idx, coeff)
        z = (h[:, e:].view(-1, e, r) * gate.unsqueeze(-1)).view(-1, e * r)
        delta = z @ w.b.T
        if dropout > 0.0 and self.training:
            delta = F.dropout(delta, dropout, True)
        return result + delta.view(*x.shape[:-1], -1).to(result.dtype)


def _is_general(name: str) -> bool:
    return name.startswith(GKS_PREFIX) and name[len(GKS_PREFIX):].isdigit()


def attach_router(layer: LoraLayer, name: str, config: ArrowConfig) -> None:
    """Give ``layer`` an Arrow router for adapter ``name`` (called when the router adapter is added)."""
    routers = layer._modules.get("lora_arrow")
    if routers is None:
        routers = nn.ModuleDict()
        layer.add_module("lora_arrow", routers)
    router = ArrowRouter(ArrowConfig.from_dict(config.to_dict()))
    routers[name] = router
    if not config.task_adapter_names:
        router.adapters_changed(layer)


def notify_routers(layer: LoraLayer, removed: str | None = None) -> None:
    """Tell the layer's Arrow routers that its adapters changed (``removed``: the one deleted, if any)."""
    routers = layer._modules.get("lora_arrow")
    if routers is None:
        return
    if removed is not None and removed in routers:
        del routers[removed]
    for router in routers.values():
        router.adapters_changed(layer)
