"""Injecting LoRA adapters into a model, the state LoRA owns outside its layers, and the tensor
shapes a LoRA adapter must have on a given base-model signature."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from ...errors import TargetingError, TargetModulesNotFoundError, UnsupportedLayerError
from ...formats import PREFIX
from ...layers import AdapterModule, iter_adapter_modules, replace_module
from ...modules_to_save import add_modules_to_save
from ...quantization import quantized_kind
from ...targeting import SEQ_CLS_HEADS, ModelView, is_target, not_found_message, resolve_target_modules
from .config import LoraConfig
from .dora import add_magnitude
from .layers import LAYER_BY_KIND, LoraConv1D, LoraLayer

if TYPE_CHECKING:
    from ...signature import ExpectedTensor, ModuleEntry, Signature

SUPPORTED = "nn.Linear, transformers' Conv1D, nn.Embedding, nn.Conv2d, bitsandbytes Linear4bit/Linear8bitLt"


def _unsupported(kind: str) -> str:
    return f"layers of type {kind} are not supported (supported: {SUPPORTED})"


def _layer_factory(module: nn.Module, kind: str) -> type[LoraLayer] | str:
    """The LoRA layer class for ``module``, or the reason it cannot be adapted."""
    if quantized_kind(module) is not None:  # bitsandbytes Linear4bit / Linear8bitLt (QLoRA)
        from .bnb import LoraBnbLinear

        return LoraBnbLinear
    cls = LAYER_BY_KIND.get(kind)
    if cls is None:
        return _unsupported(kind)
    if kind == "Conv2d":
        if module.groups != 1 or module.dilation != (1, 1):
            return "Conv2d with groups or dilation is not supported"
        if isinstance(module.padding, str):
            return "Conv2d with string padding is not supported"
    return cls


class LoraTuner:
    """The LoRA method's :class:`~sdk.methods.Tuner`."""

    disk_prefix = PREFIX
    factor_prefixes = ("lora_",)

    def summary_fields(self, config: LoraConfig) -> dict[str, Any]:
        """Rank, alpha and ``rank_pattern``."""
        fields = config.to_dict()
        return {key: fields.get(key) for key in ("r", "lora_alpha", "rank_pattern")}

    def select(self, view: ModelView, config: LoraConfig) -> list[str]:
        """Paths of the modules ``config`` targets (errors if none)."""
        targets = resolve_target_modules(view, config.target_modules, task_type=config.task_type)
        mts = self.modules_to_save(view, config)
        keys = [
            path
            for path in view.kinds
            if is_target(
                path,
                targets,
                exclude_modules=config.exclude_modules,
                layers_to_transform=config.layers_to_transform,
                layers_pattern=config.layers_pattern,
                modules_to_save=mts,
            )
        ]
        if not keys:
            extra = ""
            if config.layers_to_transform is not None:
                extra = f" within layers {config.layers_to_transform}"
            if config.exclude_modules:
                extra += f" after excluding {config.exclude_modules}"
            raise TargetModulesNotFoundError(not_found_message(view, targets, extra))
        return keys

    def modules_to_save(self, view: ModelView, config: LoraConfig) -> list[str]:
        """``modules_to_save`` plus the classification head that the task trains in full."""
        names = list(config.modules_to_save or [])
        if config.task_type in ("SEQ_CLS", "TOKEN_CLS"):
            present = {p.rsplit(".", 1)[-1] for p in view.kinds}
            names += [h for h in SEQ_CLS_HEADS if h in present and h not in names]
        return names

    def inject(self, model: nn.Module, config: LoraConfig, adapter_name: str) -> list[str]:
        """Add adapter ``adapter_name`` to every targeted module; nothing changes if any check fails."""
        view = ModelView.of(model)
        keys = self.select(view, config)
        plan: list[tuple[str, nn.Module, type[LoraLayer] | None, int]] = []
        problems: list[str] = []
        for path in keys:
            module = model.get_submodule(path)
            r = config.rank_for(path)
            if isinstance(module, LoraLayer):
                factory: type[LoraLayer] | None = None
                max_rank = module.max_rank()
            elif isinstance(module, AdapterModule):
                problems.append(f"{path}: already wrapped by {type(module).__name__}; cannot add LoRA to it")
                continue
            else:
                made = _layer_factory(module, view.kinds[path])
                if isinstance(made, str):
                    problems.append(f"{path}: {made}")
                    continue
                factory = made
                max_rank = made(module).max_rank()
            if r > max_rank:
                problems.append(
                    f"{path}: r={r} is larger than min(in, out)={max_rank} of this {view.kinds[path]}; "
                    "lower `r` (or set rank_pattern for it)"
                )
                continue
            if config.use_dora and not (factory or type(module)).supports_dora:
                problems.append(f"{path}: DoRA (use_dora=True) is not supported on "
                                f"{type(getattr(module, 'base_layer', module)).__name__} layers "
                                "(supported: nn.Linear, Conv1D)")
                continue
            plan.append((path, module, factory, r))
        if problems:
            cls = UnsupportedLayerError if all("not supported" in p for p in problems) else TargetingError
            raise cls("cannot add LoRA adapter:\n  " + "\n  ".join(problems))
        if any(factory is LoraConv1D for _, _, factory, _ in plan) and not config.fan_in_fan_out:
            config.fan_in_fan_out = True  # Conv1D stores weights in×out; PEFT records it like this
        for path, module, factory, r in plan:
            layer = module if factory is None else factory(module)
            layer.add(adapter_name, r, config.scaling_for(path, r), config.lora_dropout, config.init_lora_weights)
            if config.use_dora:
                add_magnitude(layer, adapter_name)
            if factory is not None:
                replace_module(model, path, layer)
        mts = self.modules_to_save(view, config)
        if mts:
            add_modules_to_save(model, mts, adapter_name)
        return keys

    def expected_shapes(self, config: LoraConfig, signature: Signature) -> dict[str, ExpectedTensor]:
        """On-disk keys (without ``base_model.model.``) and shapes of this adapter on ``signature``."""
        from ...signature import ExpectedTensor

        view = signature.view()
        modules = signature.by_path()
        out: dict[str, ExpectedTensor] = {}
        problems: list[str] = []
        keys = self.select(view, config)
        for path in keys:
            entry = modules.get(path)
            if entry is None:  # a parameterless container matched a regex
                problems.append(f"{path}: {_unsupported(view.kinds[path])}")
                continue
            cls = LAYER_BY_KIND.get(entry.kind)
            if cls is None or entry.in_features is None or entry.out_features is None:
                problems.append(f"{path}: {_unsupported(entry.kind)}")
                continue
            r = config.rank_for(path)
            max_rank = cls.max_rank_for(entry.in_features, entry.out_features, entry.kernel_size)
            if r > max_rank:
                problems.append(f"{path}: r={r} is larger than min(in, out)={max_rank} of this {entry.kind}")
                continue
            a_shape, b_shape = cls.shapes_for(r, entry.in_features, entry.out_features, entry.kernel_size)
            a_key, b_key = cls.disk_names
            spatial = ("kernel_h", "kernel_w")[: len(a_shape) - 2]
            a_dims = ("r", "in_features" if entry.kind != "Embedding" else "num_embeddings", *spatial)
            b_dims = ("out_features" if entry.kind != "Embedding" else "embedding_dim", "r", "1", "1")[: len(b_shape)]
            out[f"{path}.{a_key}"] = ExpectedTensor(a_shape, a_dims)
            out[f"{path}.{b_key}"] = ExpectedTensor(b_shape, b_dims)
            if config.use_dora:
                if not cls.supports_dora:
                    problems.append(f"{path}: DoRA (use_dora=True) is not supported on {entry.kind} layers")
                    continue
                out[f"{path}.lora_magnitude_vector"] = ExpectedTensor((entry.out_features,), ("out_features",))
            if entry.kind == "Embedding" and "weight" in entry.params:  # PEFT may save the full embedding
                out[f"{path}.base_layer.weight"] = ExpectedTensor(
                    entry.params["weight"], ("num_embeddings", "embedding_dim"), optional=True
                )
            if config.bias == "lora_only" and "bias" in entry.params:
                out[f"{path}.base_layer.bias"] = ExpectedTensor(entry.params["bias"], ("out_features",))
        if problems:
            raise TargetingError("the adapter config does not fit the base model:\n  " + "\n  ".join(problems))
        self._expect_outside_layers(out, view, config, signature, keys, modules)
        return out

    def _expect_outside_layers(self, out: dict[str, ExpectedTensor], view: ModelView, config: LoraConfig,
                               signature: Signature, keys: list[str], modules: dict[str, ModuleEntry]) -> None:
        """Add the tensors a LoRA-family adapter saves outside its layers: full ``modules_to_save``
        copies, and every bias with ``bias="all"`` (``base_layer.bias`` on adapted modules)."""
        from ...signature import ExpectedTensor

        for path in self._modules_to_save_paths(view, config):
            for name, shape in modules[path].params.items() if path in modules else ():
                out[f"{path}.{name}"] = ExpectedTensor(shape, tuple(f"dim{i}" for i in range(len(shape))))
        if config.bias == "all":
            adapted = set(keys)
            for entry in signature.modules:
                if "bias" in entry.params:
                    key = f"{entry.path}.base_layer.bias" if entry.path in adapted else f"{entry.path}.bias"
                    out.setdefault(key, ExpectedTensor(entry.params["bias"], ("out_features",)))

    def _modules_to_save_paths(self, view: ModelView, config: LoraConfig) -> list[str]:
        from ...targeting import matches_name_list

        names = self.modules_to_save(view, config)
        return [p for p in view.kinds if names and matches_name_list(p, names)]

    def zero_at_init(self, key: str) -> bool:
        """Whether the on-disk tensor ``key`` is all zeros in a freshly initialised adapter."""
        return key.endswith((".lora_B.weight", ".lora_embedding_A"))

    def extra_state(self, model: nn.Module, config: LoraConfig, adapter_name: str) -> dict[str, Tensor]:
        """Biases the adapter trains (``bias="all"`` or ``"lora_only"``), keyed by model path."""
        if config.bias == "none":
            return {}
        owned: dict[str, Tensor] = {}
        if config.bias == "lora_only":
            for path, mod in iter_adapter_modules(model):
                if isinstance(mod, LoraLayer) and adapter_name in mod.adapter_names():
                    bias = getattr(mod.base_layer, "bias", None)
                    if isinstance(bias, nn.Parameter):
                        owned[f"{path}.base_layer.bias"] = bias
            return owned
        skip = {path for path, mod in iter_adapter_modules(model) if not isinstance(mod, LoraLayer)}
        for name, param in model.named_parameters():
            if (name == "bias" or name.endswith(".bias")) and not any(name.startswith(s + ".") for s in skip):
                owned[name] = param
        return owned

    def mark_trainable(self, model: nn.Module, config: LoraConfig, adapter_name: str) -> None:
        """Unfreeze the biases the adapter trains."""
        for param in self.extra_state(model, config, adapter_name).values():
            if isinstance(param, nn.Parameter):
                param.requires_grad_(True)


