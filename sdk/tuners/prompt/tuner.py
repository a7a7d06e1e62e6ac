"""The tuner of the prompt-learning methods: adding a prompt adapter to a model, filling and
checking the config's model sizes, and the tensors an adapter must have on a base signature."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ...errors import ConfigError, UnsupportedLayerError
from ...layers import iter_adapter_modules, replace_module
from ...modules_to_save import add_modules_to_save
from ...signature import ExpectedTensor, transformer_dims
from ...targeting import SEQ_CLS_HEADS, matches_name_list
from .config import PrefixTuningConfig, PromptLearningConfig, PromptTuningConfig
from .encoders import build_encoder
from .init import initial_table
from .layer import SAVED_KEY, PromptLearningLayer

if TYPE_CHECKING:
    from ...config import AdapterConfig
    from ...signature import Signature

PROMPT_METHODS = frozenset({"PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING"})


def expected_sizes(config: PromptLearningConfig, dims: dict[str, int]) -> dict[str, int]:
    """``token_dim``, ``num_layers`` and ``num_attention_heads`` that the method needs on a model with ``dims``.

    Input-side prompts are token embeddings (``token_dim`` = hidden size). A prefix holds keys and
    values, so with grouped-query attention it has the key/value heads' width (PEFT's rule).
    """
    out: dict[str, int] = {}
    if "num_layers" in dims:
        out["num_layers"] = dims["num_layers"]
    if isinstance(config, PrefixTuningConfig):
        kv, head_dim = dims.get("num_key_value_heads"), dims.get("head_dim")
        if kv and head_dim:
            out["token_dim"] = kv * head_dim
            out["num_attention_heads"] = kv
    else:
        if "hidden_size" in dims:
            out["token_dim"] = dims["hidden_size"]
        if "num_attention_heads" in dims:
            out["num_attention_heads"] = dims["num_attention_heads"]
    return out


WHAT = {
    "token_dim": "width of the virtual tokens",
    "num_layers": "number of transformer layers",
    "num_attention_heads": "number of attention heads",
}


def size_problems(config: PromptLearningConfig, dims: dict[str, int]) -> list[str]:
    """How the config's model sizes disagree with a base model's ``dims`` (empty: they fit)."""
    want = expected_sizes(config, dims)
    prefix = isinstance(config, PrefixTuningConfig)
    problems = []
    for field, value in want.items():
        got = getattr(config, field)
        if got is not None and got != value:
            basis = ""
            if prefix and field != "num_layers":
                basis = (f" (key/value heads {dims['num_key_value_heads']} × head_dim {dims['head_dim']})"
                         if field == "token_dim" else " (its key/value heads)")
            elif field == "token_dim":
                basis = " (its hidden size)"
            problems.append(f"{field}={got} but the base model's {WHAT[field]} is {value}{basis}")
    if prefix:
        missing = [f for f in ("token_dim", "num_layers", "num_attention_heads") if getattr(config, f) is None]
        if missing:
            problems.append(f"prefix tuning needs {', '.join(missing)} and the base model's config does not give them")
        elif config.token_dim % config.num_attention_heads:
            problems.append(
                f"token_dim={config.token_dim} is not a multiple of num_attention_heads={config.num_attention_heads}"
            )
    elif config.token_dim is None:
        problems.append("token_dim is not set and the base model's config does not give its hidden size")
    return problems


def fill_sizes(config: PromptLearningConfig, dims: dict[str, int]) -> None:
    """Set the model-size fields left empty from the base model (saved with the adapter, as PEFT does)."""
    for field, value in expected_sizes(config, dims).items():
        if getattr(config, field) is None:
            setattr(config, field, value)
    if config.num_transformer_submodules is None:
        config.num_transformer_submodules = 1
    if hasattr(config, "encoder_hidden_size") and config.encoder_hidden_size is None:
        config.encoder_hidden_size = config.token_dim


def heads_to_save(config: PromptLearningConfig, paths: list[str]) -> list[str]:
    """``modules_to_save`` plus the classification head a SEQ_CLS/TOKEN_CLS task trains (as PEFT does)."""
    names = list(dict.fromkeys(config.modules_to_save or []))
    if config.task_type in ("SEQ_CLS", "TOKEN_CLS"):
        # peft writes both head names into the config whichever the model has; keep the one it has
        present = {p.rsplit(".", 1)[-1] for p in paths}
        names = [n for n in names if n not in SEQ_CLS_HEADS or n in present]
        names += [h for h in SEQ_CLS_HEADS if h in present and h not in names]
    return names


def _input_embedding(model: nn.Module) -> tuple[str, nn.Embedding]:
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    if not isinstance(embedding, nn.Embedding):
        raise UnsupportedLayerError(
            f"prompt methods need a model whose get_input_embeddings() returns an nn.Embedding; "
            f"{type(model).__name__} gives {type(embedding).__name__}"
        )
    path = next((p for p, m in model.named_modules() if m is embedding), None)
    if not path:
        raise UnsupportedLayerError(f"cannot find the input embedding of {type(model).__name__} among its modules")
    return path, embedding


class PromptTuner:
    """The :class:`~sdk.methods.Tuner` of ``PROMPT_TUNING``, ``PREFIX_TUNING`` and ``P_TUNING``."""

    #: PEFT saves a prompt adapter's ``modules_to_save`` as ``base_model.<path>`` (its prompt
    #: models have no inner ``model`` wrapper) and the table as the top-level ``prompt_embeddings``.
    disk_prefix = "base_model."
    #: The prompt table is one top-level tensor: no module of the model holds the adapter.
    factor_prefixes: tuple[str, ...] = ()

    def inject(self, model: nn.Module, config: AdapterConfig, adapter_name: str) -> list[str]:
        """Add prompt adapter ``adapter_name`` to ``model``; nothing changes if a check fails."""
        assert isinstance(config, PromptLearningConfig)
        layer = next((m for _, m in iter_adapter_modules(model) if isinstance(m, PromptLearningLayer)), None)
        if layer is None:
            path, embedding = _input_embedding(model)
        else:
            path = next(p for p, m in iter_adapter_modules(model) if m is layer)
            embedding = layer.base_layer
        model_config = getattr(model, "config", None)
        if getattr(model_config, "is_encoder_decoder", False):
            raise UnsupportedLayerError(
                f"{type(model).__name__} is an encoder-decoder model; prompt methods here support decoder-only "
                "(causal LM) and encoder-only models"
            )
        dims = transformer_dims(model_config)
        dims.setdefault("hidden_size", embedding.embedding_dim)
        fill_sizes(config, dims)
        problems = size_problems(config, dims)
        if problems:
            raise ConfigError(f"{config.peft_type} adapter {adapter_name!r} does not fit this model:\n  "
                              + "\n  ".join(problems))
        if isinstance(config, PrefixTuningConfig) and layer is None and not _takes_cache(model):
            raise UnsupportedLayerError(
                f"prefix tuning needs a model whose forward takes a key/value cache (`cache`); "
                f"{type(model).__name__}.forward does not. Use prompt tuning or P-tuning for this model."
            )
        if isinstance(config, PrefixTuningConfig) and layer is not None and layer.cache_key is None:
            raise UnsupportedLayerError("prefix tuning needs a model whose forward takes a key/value cache (`cache`)")
        mts = heads_to_save(config, [p for p, _ in model.named_modules()])
        encoder = build_encoder(config)
        if isinstance(config, PromptTuningConfig) and not config.inference_mode:
            start = initial_table(config, embedding)
            if start is not None:
                with torch.no_grad():
                    encoder.embedding.weight.copy_(start)
        encoder.to(embedding.weight.device)
        if layer is None:
            layer = PromptLearningLayer(embedding, model)
            replace_module(model, path, layer)
        layer.add(adapter_name, encoder, config)
        if mts:
            try:
                add_modules_to_save(model, mts, adapter_name)
            except Exception:
                layer.delete_adapter(adapter_name)
                if not layer.adapter_names():
                    replace_module(model, path, layer.unwrap(merge=False))
                raise
        return [path]

    def expected_shapes(self, config: AdapterConfig, signature: Signature) -> dict[str, ExpectedTensor]:
        """``prompt_embeddings`` (and any modules to save) of this adapter on ``signature``."""
        assert isinstance(config, PromptLearningConfig)
        dims = dict(signature.dims)
        problems = size_problems(config, dims)
        if problems:
            raise ConfigError(f"the {config.peft_type} adapter config does not fit the base model:\n  "
                              + "\n  ".join(problems))
        width_dims = ("num_layers·2·token_dim",) if isinstance(config, PrefixTuningConfig) else ("token_dim",)
        rows_dims = (
            ("num_virtual_tokens",) if isinstance(config, PrefixTuningConfig)
            else ("num_virtual_tokens·num_transformer_submodules",)
        )
        out = {
            SAVED_KEY: ExpectedTensor(
                (config.total_virtual_tokens, config.table_width()), rows_dims + width_dims, top_level=True
            )
        }
        names = heads_to_save(config, [m.path for m in signature.modules])
        for entry in signature.modules:
            if names and matches_name_list(entry.path, names):
                for param, shape in entry.params.items():
                    out[f"{entry.path}.{param}"] = ExpectedTensor(shape, tuple(f"dim{i}" for i in range(len(shape))))
        return out

    def summary_fields(self, config: AdapterConfig) -> dict[str, Any]:
        """The number of virtual tokens."""
        return {"num_virtual_tokens": config.to_dict().get("num_virtual_tokens")}

    def zero_at_init(self, key: str) -> bool:
        """Prompt tables start random (or from text), never all zeros."""
        return False

    def extra_state(self, model: nn.Module, config: AdapterConfig, adapter_name: str) -> dict[str, Tensor]:
        """Nothing outside the prompt layer and the modules to save."""
        return {}

    def mark_trainable(self, model: nn.Module, config: AdapterConfig, adapter_name: str) -> None:
        """The base model stays frozen: nothing to unfreeze."""

    # --- optional hooks (see sdk.methods.CompositionHooks) --------------------------------------
    def conflict(self, other_peft_type: str) -> str | None:
        """Prompt adapters share a model only with other prompt adapters."""
        if other_peft_type.upper() in PROMPT_METHODS:
            return None
        return (
            f"prompt-learning adapters (virtual tokens in front of the input) and {other_peft_type} adapters (changes "
            "to the model's layers) cannot be combined in one model; use one model per method"
        )

    def merge_refusal(self, config: AdapterConfig) -> str | None:
        """Virtual tokens are extra inputs, not a change of weights: there is nothing to merge."""
        return (
            f"{config.peft_type} adapters cannot be merged: their virtual tokens are extra inputs in front of the "
            "sequence, not a change of the base weights, so there is nothing to add into the weights. Keep the adapter "
            "loaded (or use unload() to drop it)."
        )


def _takes_cache(model: nn.Module) -> bool:
    from .layer import CACHE_NAMES, forward_parameters

    return any(n in forward_parameters(model) for n in CACHE_NAMES)


__all__ = ["PROMPT_METHODS", "PromptTuner", "expected_sizes", "fill_sizes", "size_problems"]
