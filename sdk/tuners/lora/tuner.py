"""The LoRA method's tuner: which layer class wraps a module, the rank and DoRA checks, the tensor
shapes a LoRA adapter has on a base-model signature, and the biases an adapter trains.

:class:`LoraFamilyTuner` holds what AdaLoRA shares with LoRA on top of
:class:`~sdk.tuners.layer_tuner.LayerTuner`: PEFT's LoRA targeting and the ``bias`` field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from ...layers import AdapterModule, iter_adapter_modules
from ...quantization import quantized_kind
from ...signature import ExpectedTensor
from ...targeting import ModelView, resolve_target_modules
from ..layer_tuner import LayerTuner, Plan
from .arrow import ArrowConfig, attach_router
from .config import LoraConfig
from .dora import add_magnitude
from .layers import LAYER_BY_KIND, LoraConv1D, LoraLayer, LoraLinear

if TYPE_CHECKING:
    from ...signature import ModuleEntry, Signature

def owned_bias(config: Any, entry: ModuleEntry) -> dict[str, ExpectedTensor]:
    """The adapted module's own bias when the adapter trains it (``bias="lora_only"``), by on-disk suffix."""
    if config.bias == "lora_only" and "bias" in entry.params:
        return {"base_layer.bias": ExpectedTensor(entry.params["bias"], ("out_features",))}
    return {}


class LoraFamilyTuner(LayerTuner):
    """LoRA's and AdaLoRA's common ground: targets resolved as PEFT's LoRA does, and the biases an adapter
    trains and saves (``bias="all"``: every bias; ``"lora_only"``: those of the adapted modules)."""

    factor_prefixes = ("lora_",)
    #: The method's layer class per module kind (as named in signatures).
    layer_by_kind: ClassVar[Mapping[str, type[AdapterModule]]]
    #: Why a module kind the method has no layer for cannot carry it (``{kind}``: that kind).
    kind_unsupported_text: ClassVar[str]

    def kind_unsupported(self, kind: str) -> str:
        return self.kind_unsupported_text.format(kind=kind)

    def unsupported(self, entry: ModuleEntry) -> str | None:
        if entry.kind not in self.layer_by_kind or entry.in_features is None or entry.out_features is None:
            return self.kind_unsupported(entry.kind)
        return None

    def targets(self, view: ModelView, config: Any) -> str | list[str]:
        """The config's targets, or the LoRA default for this architecture."""
        return resolve_target_modules(view, config.target_modules, task_type=config.task_type)

    def summary_fields(self, config: Any) -> dict[str, Any]:
        """Rank, alpha and ``rank_pattern``."""
        fields = config.to_dict()
        return {key: fields.get(key) for key in ("r", "lora_alpha", "rank_pattern")}

    def expect_outside_layers(
        self, out: dict[str, ExpectedTensor], view: ModelView, config: Any, signature: Signature, keys: list[str]
    ) -> None:
        """Full ``modules_to_save`` copies, and every bias with ``bias="all"`` (``base_layer.bias`` on adapted
        modules)."""
        super().expect_outside_layers(out, view, config, signature, keys)
        if config.bias == "all":
            adapted = set(keys)
            for entry in signature.modules:
                if "bias" in entry.params:
                    key = f"{entry.path}.base_layer.bias" if entry.path in adapted else f"{entry.path}.bias"
                    out.setdefault(key, ExpectedTensor(entry.params["bias"], ("out_features",)))

    def extra_state(self, model: nn.Module, config: Any, adapter_name: str) -> dict[str, Tensor]:
        """Biases the adapter trains (``bias="all"`` or ``"lora_only"``), keyed by model path."""
        if config.bias == "none":
            return {}
        if config.bias == "lora_only":
            return {
                f"{path}.base_layer.bias": bias
                for path, mod in iter_adapter_modules(model)
                if isinstance(mod, self.layer_cls) and adapter_name in mod.adapter_names()
                and isinstance(bias := getattr(mod.base_layer, "bias", None), nn.Parameter)
            }
        skip = {path for path, mod in iter_adapter_modules(model) if not isinstance(mod, self.layer_cls)}
        return {
            name: param
            for name, param in model.named_parameters()
            if (name == "bias" or name.endswith(".bias")) and not any(name.startswith(s + ".") for s in skip)
        }

    def mark_trainable(self, model: nn.Module, config: Any, adapter_name: str) -> None:
        """Unfreeze the biases the adapter trains."""
        for param in self.extra_state(model, config, adapter_name).values():
            if isinstance(param, nn.Parameter):
                param.requires_grad_(True)


class LoraTuner(LoraFamilyTuner):
    """The LoRA method's :class:`~sdk.methods.Tuner`."""

    method = "LoRA"
    layer_cls: ClassVar[type[AdapterModule]] = LoraLayer
    layer_by_kind = LAYER_BY_KIND
    kind_unsupported_text = (
        "layers of type {kind} are not supported (supported: nn.Linear, transformers' Conv1D, nn.Embedding, "
        "nn.Conv2d, bitsandbytes Linear4bit/Linear8bitLt)"
    )

    def layer_for(self, module: nn.Module, path: str, config: LoraConfig, view: ModelView) -> type[LoraLayer] | str:
        """The LoRA layer class for ``module``, or the reason it cannot be adapted."""
        if quantized_kind(module) is not None:  # bitsandbytes Linear4bit / Linear8bitLt (QLoRA)
            from .bnb import LoraBnbLinear

            return LoraBnbLinear
        kind = view.kinds[path]
        cls = LAYER_BY_KIND.get(kind)
        if cls is None:
            return self.kind_unsupported(kind)
        if kind == "Conv2d":
            if module.groups != 1 or module.dilation != (1, 1):
                return "Conv2d with groups or dilation is not supported"
            if isinstance(module.padding, str):
                return "Conv2d with string padding is not supported"
        return cls

    def fit_problem(
        self, module: nn.Module, layer_cls: type[AdapterModule], path: str, config: LoraConfig, view: ModelView
    ) -> str | None:
        """A rank above min(in, out), or DoRA on a layer kind without it."""
        r = config.rank_for(path)
        max_rank = (module if isinstance(module, LoraLayer) else layer_cls(module)).max_rank()
        if r > max_rank:
            return (f"r={r} is larger than min(in, out)={max_rank} of this {view.kinds[path]}; "
                    "lower `r` (or set rank_pattern for it)")
        if getattr(config, "arrow_config", None) and not (
                issubclass(layer_cls, LoraLinear) and not quantized_kind(getattr(module, "base_layer", module))):
            return "Arrow routes only nn.Linear and Conv1D layers"
        if config.use_dora and not layer_cls.supports_dora:
            return (f"DoRA (use_dora=True) is not supported on {type(getattr(module, 'base_layer', module)).__name__} "
                    "layers (supported: nn.Linear, Conv1D)")
        return None

    def prepare(self, plan: Plan, config: LoraConfig, view: ModelView) -> None:
        """Record ``fan_in_fan_out`` when Conv1D layers (weights stored in×out) get wrapped, as PEFT does."""
        if any(layer_cls is LoraConv1D for _, _, layer_cls in plan) and not config.fan_in_fan_out:
            config.fan_in_fan_out = True

    def add_to_layer(self, layer: LoraLayer, adapter_name: str, config: LoraConfig, path: str, view: ModelView
                     ) -> None:
        r = config.rank_for(path)
        layer.add(adapter_name, r, config.scaling_for(path, r), config.lora_dropout, config.init_lora_weights)
        if config.use_dora:
            add_magnitude(layer, adapter_name)
        if getattr(config, "arrow_config", None):
            attach_router(layer, adapter_name, ArrowConfig.from_dict(config.arrow_config))

    def merge_refusal(self, config: LoraConfig) -> str | None:
        """An Arrow router has no single ΔW: it mixes experts per token."""
        if getattr(config, "arrow_config", None):
            return "an Arrow router mixes experts per token, so there is no single ΔW to merge; merge experts instead"
        return None

    def tensor_shapes(
        self, config: LoraConfig, path: str, entry: ModuleEntry, view: ModelView
    ) -> dict[str, ExpectedTensor]:
        """A and B (``lora_embedding_A``/``_B`` on embeddings), DoRA's magnitudes, and the biases saved with them."""
        assert entry.in_features is not None and entry.out_features is not None
        cls = LAYER_BY_KIND[entry.kind]
        r = config.rank_for(path)
        max_rank = cls.max_rank_for(entry.in_features, entry.out_features, entry.kernel_size)
        if r > max_rank:
            raise ValueError(f"r={r} is larger than min(in, out)={max_rank} of this {entry.kind}")
        if config.use_dora and not cls.supports_dora:
            raise ValueError(f"DoRA (use_dora=True) is not supported on {entry.kind} layers")
        a_shape, b_shape = cls.shapes_for(r, entry.in_features, entry.out_features, entry.kernel_size)
        a_key, b_key = cls.disk_names
        spatial = ("kernel_h", "kernel_w")[: len(a_shape) - 2]
        embedding = entry.kind == "Embedding"
        a_dims = ("r", "num_embeddings" if embedding else "in_features", *spatial)
        b_dims = ("embedding_dim" if embedding else "out_features", "r", "1", "1")[: len(b_shape)]
        out = {a_key: ExpectedTensor(a_shape, a_dims), b_key: ExpectedTensor(b_shape, b_dims)}
        if config.use_dora:
            out["lora_magnitude_vector"] = ExpectedTensor((entry.out_features,), ("out_features",))
        if embedding and "weight" in entry.params:  # PEFT may save the full embedding
            out["base_layer.weight"] = ExpectedTensor(
                entry.params["weight"], ("num_embeddings", "embedding_dim"), optional=True
            )
        return out | owned_bias(config, entry)

    def zero_at_init(self, key: str) -> bool:
        """Whether the on-disk tensor ``key`` is all zeros in a freshly initialised adapter."""
        return key.endswith((".lora_B.weight", ".lora_embedding_A"))
