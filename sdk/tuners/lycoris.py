"""What LoHa and LoKr share (the "LyCORIS" family): config fields, the layer, the tuner.

Both build a full ΔW for each adapted layer from small factors (a Hadamard product of two
low-rank products for LoHa, a Kronecker product for LoKr) and add ``F.linear(x, ΔW)`` (or the
matching ``conv2d``) to the base output. A method supplies only its factor shapes, their
initialisation and how ΔW is rebuilt from them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import AdapterConfig
from ..errors import ConfigError
from ..grouped import GroupedLayer, GroupedWeights, grouped_linear
from ..layers import AdapterLayer
from ..routing import Routing
from ..signature import ExpectedTensor
from ..targeting import DEFAULT_TARGETS, ModelView, module_kind, pattern_key
from .config_checks import check_layers, check_number, check_patterns, check_positive_int, normalise_name_lists
from .layer_tuner import LayerTuner

if TYPE_CHECKING:
    from ..signature import ModuleEntry

SUPPORTED_KINDS = ("Linear", "Conv2d")

#: A factor's shape and the meaning of each of its dimensions.
FactorShapes = dict[str, tuple[tuple[int, ...], tuple[str, ...]]]


@dataclasses.dataclass
class LycorisConfig(AdapterConfig):
    """Fields LoHa and LoKr share (PEFT's ``LycorisConfig`` plus the targeting fields)."""

    r: int = 8
    alpha: float = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    use_effective_conv2d: bool = False
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    init_weights: bool | str = True
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, int] = dataclasses.field(default_factory=dict)
    alpha_pattern: dict[str, float] = dataclasses.field(default_factory=dict)
    modules_to_save: list[str] | None = None

    #: Allowed values of ``init_weights``.
    init_choices: ClassVar[tuple[Any, ...]] = (True, False)

    def validate(self) -> None:
        normalise_name_lists(self, "target_modules", "exclude_modules", "modules_to_save")
        check_patterns(self, "rank_pattern", "alpha_pattern")
        check_positive_int("`r`", self.r)
        for key, value in self.rank_pattern.items():
            check_positive_int(f"rank_pattern[{key!r}]", value)
        check_number(self, "alpha")
        check_number(self, "rank_dropout", 0.0, 1.0)
        check_number(self, "module_dropout", 0.0, 1.0)
        check_layers(self)
        if self.init_weights not in self.init_choices:
            raise ConfigError(f"`init_weights` must be one of {list(self.init_choices)}, got {self.init_weights!r}")

    def rank_for(self, path: str) -> int:
        """Rank of the module at ``path`` (``rank_pattern`` overrides ``r``)."""
        key = pattern_key(self.rank_pattern, path)
        return self.rank_pattern[key] if key is not None else self.r

    def alpha_for(self, path: str) -> float:
        """Alpha of the module at ``path`` (``alpha_pattern`` overrides ``alpha``)."""
        key = pattern_key(self.alpha_pattern, path)
        return self.alpha_pattern[key] if key is not None else self.alpha


def kaiming(t: Tensor) -> None:
    """PEFT's default factor init (Kaiming uniform, a=√5)."""
    nn.init.kaiming_uniform_(t, a=math.sqrt(5))


def weight_dims(entry: ModuleEntry) -> tuple[int, int, tuple[int, ...]]:
    """(out, in per group, kernel) of a Linear or Conv2d module entry."""
    weight = entry.params.get("weight")
    if weight is None:
        raise ValueError("the module has no weight")
    if entry.kind == "Conv2d":
        return weight[0], weight[1], tuple(weight[2:])
    return weight[0], weight[1], ()


class LycorisLayer(GroupedLayer, AdapterLayer):
    """Holds each adapter's factors and adds ``x ↦ ΔW·x`` with ΔW rebuilt by the method."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.factors = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.rank_dropout: dict[str, float] = {}
        self.rank_dropout_rescale: dict[str, bool] = {}
        self.module_dropout: dict[str, float] = {}
        self.kind = module_kind(base_layer)

    def rebuild(self, name: str) -> Tensor:
        """ΔW (unscaled, any shape with the weight's element count) from the adapter's factors."""
        raise NotImplementedError

    def add(self, name: str, factors: Mapping[str, Tensor], scaling: float, config: LycorisConfig) -> None:
        """Create adapter ``name`` from initialised factor tensors."""
        self.factors[name] = nn.ParameterDict({k: nn.Parameter(v) for k, v in factors.items()})
        self.scaling[name] = scaling
        self.rank_dropout[name] = float(config.rank_dropout)
        self.rank_dropout_rescale[name] = bool(getattr(config, "rank_dropout_scale", True))
        self.module_dropout[name] = float(config.module_dropout)
        self._mix_cache.clear()
        self._refresh()

    def adapter_names(self) -> list[str]:
        return list(self.factors.keys())

    def adapter_tensors(self, name: str) -> dict[str, Tensor]:
        return dict(self.factors[name].items())

    def _delete(self, name: str) -> None:
        del self.factors[name]
        for meta in (self.scaling, self.rank_dropout, self.rank_dropout_rescale, self.module_dropout):
            meta.pop(name, None)
        self._mix_cache.clear()

    def delta_weight(self, name: str) -> Tensor:
        return (self.rebuild(name) * self.scaling[name]).reshape(self.base_layer.weight.shape)

    def _train_delta(self, name: str) -> Tensor:
        """ΔW with rank dropout (rows of ΔW dropped at random) while training."""
        delta = self.delta_weight(name)
        p = self.rank_dropout[name]
        if self.training and p > 0.0:
            keep = (torch.rand(delta.shape[0], device=delta.device) > p).to(delta.dtype)
            if self.rank_dropout_rescale[name]:  # (no data-dependent branch: it would break a compiled graph)
                mean = keep.mean()
                keep = keep / torch.where(mean > 0, mean, torch.ones_like(mean))
            delta = delta * keep.view(-1, *([1] * (delta.dim() - 1)))
        return delta

    def _apply(self, x: Tensor, delta: Tensor) -> Tensor:
        if self.kind == "Conv2d":
            b = self.base_layer
            return F.conv2d(x.to(delta.dtype), delta, None, b.stride, b.padding, b.dilation, b.groups)
        return F.linear(x.to(delta.dtype), delta)

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        result = self.base_layer(x, *args, **kwargs)
        routing = self._route
        if routing is not None:
            routing.check_batch(x.shape[0])
            if self._mix is not None:
                return grouped_linear(x, result, routing, self._mix)
            for name, idx in routing.members.items():  # Conv2d: one adapter at a time
                if name in self.factors:
                    idx = idx.to(x.device)
                    extra = self._apply(x.index_select(0, idx), self.delta_weight(name))
                    result = result.index_add(0, idx, extra.to(result.dtype))
            return result
        if self.disabled:
            return result
        for name in self._live:
            extra = self._apply(x, self._train_delta(name))
            p = self.module_dropout[name]
            if self.training and p > 0.0:  # module dropout: this adapter is left out of the whole step
                extra = extra * (torch.rand((), device=extra.device) >= p).to(extra.dtype)
            result = result + extra.to(result.dtype)
        return result

    def groups_here(self, routing: Routing) -> bool:
        return self.kind != "Conv2d" and any(n in self.factors for n in routing.unique)  # Conv2d: one at a time

    def stack(self, names: tuple[str, ...]) -> tuple[GroupedWeights, list[Tensor]]:
        """ΔWᵀ (U, in, out) of ``names``, zeros where an adapter is absent."""
        here = [n for n in names if n in self.factors]
        sources = [t for n in here for t in self.factors[n].values()]
        out_f, in_f = self.base_layer.weight.shape[:2]
        stack = torch.zeros(len(names), in_f, out_f, dtype=sources[0].dtype, device=sources[0].device)
        with torch.no_grad():
            for u, n in enumerate(names):
                if n in self.factors:
                    stack[u] = self.delta_weight(n).t()
        return GroupedWeights(stack), sources


class LycorisTuner(LayerTuner):
    """Tuner of a LyCORIS method: selection and injection from :class:`LayerTuner`, factors from the method."""

    layer_cls: ClassVar[type[LycorisLayer]]
    default_targets = DEFAULT_TARGETS

    def factor_shapes(self, config: Any, r: int, out_f: int, in_f: int, kernel: tuple[int, ...]) -> FactorShapes:
        """Factor name -> (shape, dimension names) for a layer of these dimensions."""
        raise NotImplementedError

    def init_factors(self, config: Any, factors: dict[str, Tensor]) -> None:
        """Initialise freshly allocated factors in place."""
        raise NotImplementedError

    def unsupported(self, entry: ModuleEntry) -> str | None:
        if entry.kind not in SUPPORTED_KINDS:
            return (f"layers of type {entry.kind} are not supported by {self.method} "
                    "(supported: nn.Linear, nn.Conv2d; PEFT has no LyCORIS layer for GPT-2's Conv1D either)")
        return None

    def tensor_shapes(
        self, config: Any, path: str, entry: ModuleEntry, view: ModelView
    ) -> dict[str, ExpectedTensor]:
        out_f, in_f, kernel = weight_dims(entry)
        shapes = self.factor_shapes(config, config.rank_for(path), out_f, in_f, kernel)
        return {k: ExpectedTensor(shape, dims) for k, (shape, dims) in shapes.items()}

    def add_to_layer(self, layer: LycorisLayer, adapter_name: str, config: Any, path: str, view: ModelView) -> None:
        weight = layer.base_layer.weight
        out_f, in_f, kernel = weight.shape[0], weight.shape[1], tuple(weight.shape[2:])
        r = config.rank_for(path)
        dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        factors = {k: torch.empty(shape, dtype=dtype, device=weight.device)
                   for k, (shape, _) in self.factor_shapes(config, r, out_f, in_f, kernel).items()}
        self.init_factors(config, factors)
        layer.add(adapter_name, factors, config.alpha_for(path) / r, config)
