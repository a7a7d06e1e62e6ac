"""Base-model signatures, their fingerprints, and checking an adapter against a signature.

A signature lists every module of a model that holds parameters: its path, kind
(``Linear``, ``Conv1D``, ``Embedding``, ``Conv2d`` or the class name of anything else), its
in/out features (and kernel size), the shapes of its own parameters and their dtype. The
fingerprint is the sha256 of the canonical JSON of the signature *without dtypes*, so the
same architecture gives the same fingerprint whether it was loaded in fp32 or bf16, built
from a local model or from a ``config.json`` on the meta device.

:func:`check_adapter` compares an adapter's config and tensor shapes (read from a
safetensors header, nothing loaded) with a signature and lists every problem. The registry
runs it on each upload and the SDK client runs it before pushing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import AdapterConfig
from .errors import AdapterError, ConfigError
from .layers import AdapterModule, model_view
from .methods import get_method
from .problems import Problem
from .quantization import logical_param_shapes, quantization_label
from .targeting import ModelView, module_kind

SIGNATURE_FORMAT = 1


@dataclass(frozen=True)
class ModuleEntry:
    """One module of a base model."""

    path: str
    kind: str
    in_features: int | None = None
    out_features: int | None = None
    kernel_size: tuple[int, ...] | None = None
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtype: str | None = None

    def canonical(self) -> dict[str, Any]:
        """The fingerprinted part: everything but the dtype."""
        return {
            "path": self.path,
            "kind": self.kind,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "kernel_size": list(self.kernel_size) if self.kernel_size else None,
            "params": {k: list(v) for k, v in sorted(self.params.items())},
        }


@dataclass(frozen=True)
class Signature:
    """Every parameter-holding module of a base model, in path order."""

    modules: tuple[ModuleEntry, ...]
    model_type: str | None = None
    architecture: str | None = None
    output_heads: tuple[str, ...] = ()
    #: transformer sizes from the model's config (see :func:`transformer_dims`); prompt methods are
    #: checked against them. Not fingerprinted: they add no parameter shape, and leaving them out
    #: keeps the fingerprints of signatures registered before they existed unchanged.
    dims: dict[str, int] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the canonical JSON of the modules, dtypes left out."""
        body = [m.canonical() for m in sorted(self.modules, key=lambda m: m.path)]
        text = json.dumps({"format": SIGNATURE_FORMAT, "modules": body}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def by_path(self) -> dict[str, ModuleEntry]:
        """Modules keyed by path."""
        return {m.path: m for m in self.modules}

    def view(self) -> ModelView:
        """The targeting view of this signature."""
        return ModelView({m.path: m.kind for m in self.modules}, self.model_type, frozenset(self.output_heads))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what the registry stores and the client sends)."""
        return {
            "format": SIGNATURE_FORMAT,
            "model_type": self.model_type,
            "architecture": self.architecture,
            "output_heads": list(self.output_heads),
            "modules": [{**m.canonical(), "dtype": m.dtype} for m in self.modules],
            "dims": dict(self.dims),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Parse the JSON form; errors name the offending entry."""
        if not isinstance(data, Mapping) or not isinstance(data.get("modules"), list):
            raise ConfigError("a signature is a JSON object with a 'modules' list")
        if data.get("format", SIGNATURE_FORMAT) != SIGNATURE_FORMAT:
            raise ConfigError(f"signature format {data.get('format')!r} is not supported (expected {SIGNATURE_FORMAT})")
        modules = []
        for i, m in enumerate(data["modules"]):
            try:
                modules.append(
                    ModuleEntry(
                        path=str(m["path"]),
                        kind=str(m["kind"]),
                        in_features=_opt_int(m.get("in_features")),
                        out_features=_opt_int(m.get("out_features")),
                        kernel_size=tuple(int(k) for k in m["kernel_size"]) if m.get("kernel_size") else None,
                        params={str(k): tuple(int(d) for d in v) for k, v in (m.get("params") or {}).items()},
                        dtype=m.get("dtype"),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ConfigError(f"signature module #{i} is malformed: {exc!r}") from exc
        sig = cls(
            tuple(modules),
            data.get("model_type"),
            data.get("architecture"),
            tuple(data.get("output_heads") or ()),
            _parse_dims(data.get("dims")),
        )
        claimed = data.get("fingerprint")
        if claimed is not None and claimed != sig.fingerprint:
            raise ConfigError(f"signature fingerprint {claimed} does not match its modules ({sig.fingerprint})")
        return sig


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _parse_dims(raw: Any) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"signature 'dims' must be an object of integers, got {raw!r}")
    try:
        return {str(k): int(v) for k, v in raw.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"signature 'dims' must be an object of integers: {exc}") from exc


def transformer_dims(config: Any) -> dict[str, int]:
    """Sizes of a transformer read from its (transformers) config: ``hidden_size``, ``num_layers``,
    ``num_attention_heads``, ``num_key_value_heads`` and ``head_dim``; those it lacks are left out.

    Methods acting on attention (prefix tuning's key/value states) and on the input embeddings
    (prompt tuning) need them; a multimodal config gives its text model's sizes.
    """
    if config is None:
        return {}
    text = config.get_text_config() if callable(getattr(config, "get_text_config", None)) else config

    def first(*names: str) -> int | None:
        for name in names:
            value = text.get(name) if isinstance(text, Mapping) else getattr(text, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    hidden = first("hidden_size", "n_embd", "d_model")
    heads = first("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads")
    dims = {
        "hidden_size": hidden,
        "num_layers": first("num_hidden_layers", "num_layers", "n_layer"),
        "num_attention_heads": heads,
        "num_key_value_heads": first("num_key_value_heads") or heads,
        "head_dim": first("head_dim") or (hidden // heads if hidden and heads else None),
    }
    return {k: v for k, v in dims.items() if v is not None}


def signature_from_model(model: nn.Module) -> Signature:
    """The signature of a live (or meta-device) model. Adapter layers count as their base layer."""
    view = model_view(model)
    entries: list[ModuleEntry] = []
    for path in view.kinds:
        module = model.get_submodule(path)
        base = module.base_layer if isinstance(module, AdapterModule) else module
        params = dict(base.named_parameters(recurse=False))
        if not params:
            continue
        entries.append(_entry(path, base, params))
    arch = type(model).__name__
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    dims = transformer_dims(getattr(model, "config", None))
    return Signature(tuple(entries), model_type, arch, tuple(sorted(view.output_heads)), dims)


def module_entry(path: str, module: nn.Module) -> ModuleEntry:
    """The signature entry of one live module (what tuners check layer shapes against)."""
    return _entry(path, module, dict(module.named_parameters(recurse=False)))


def _entry(path: str, module: nn.Module, params: dict[str, nn.Parameter]) -> ModuleEntry:
    kind = module_kind(module)
    first = next(iter(params.values()))
    shapes = logical_param_shapes(module, params)  # a 4-bit weight counts as out×in, not its packed bytes
    in_f = out_f = None
    kernel = None
    if kind == "Linear":
        in_f, out_f = module.in_features, module.out_features
    elif kind == "Conv1D":
        in_f, out_f = module.weight.shape[0], module.weight.shape[1]
    elif kind == "Embedding":
        in_f, out_f = module.num_embeddings, module.embedding_dim
    elif kind == "Conv2d":
        in_f, out_f, kernel = module.in_channels, module.out_channels, tuple(module.kernel_size)
    dtype = quantization_label(module) or str(first.dtype).removeprefix("torch.")
    return ModuleEntry(path, kind, in_f, out_f, kernel, shapes, dtype)


def signature_from_config(config: Mapping[str, Any]) -> Signature:
    """Build a model from a transformers ``config.json`` dict on the meta device (no weights)."""
    import transformers

    data = dict(config)
    model_type = data.get("model_type")
    if not model_type:
        raise ConfigError("config.json has no 'model_type'")
    try:
        cfg = transformers.AutoConfig.for_model(**data)
    except Exception as exc:  # whatever a config's own checks raise, the config is what is wrong
        raise ConfigError(f"transformers cannot read this config.json: {exc}") from exc
    cls = model_class(data.get("architectures"))
    with torch.device("meta"):
        try:
            model = cls(cfg) if cls is not None else transformers.AutoModelForCausalLM.from_config(cfg)
        except Exception as exc:  # any model class can fail on a config it does not fit
            raise ConfigError(f"cannot build model_type={model_type!r} from this config.json: {exc}") from exc
    return signature_from_model(model)


def model_class(architectures: Any) -> type | None:
    """The transformers model class ``architectures[0]`` names (None without one); anything else in
    transformers (a function such as ``set_seed``, a config or tokenizer class, an auto class) is a
    :class:`ConfigError`, so a config never makes the SDK call something that is not a model."""
    import transformers

    if not architectures:
        return None
    if not isinstance(architectures, list) or not isinstance(architectures[0], str):
        raise ConfigError(f"config.json 'architectures' must be a list of class names, got {architectures!r}")
    name = architectures[0]
    cls = getattr(transformers, name, None) if name.isidentifier() and not name.startswith("_") else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)
            and cls is not transformers.PreTrainedModel):
        raise ConfigError(f"config.json architectures[0] {name[:100]!r} is not a model class of transformers "
                          f"{transformers.__version__} (e.g. 'LlamaForCausalLM')")
    return cls


# --- checking an adapter against a signature ---------------------------------------------------


@dataclass(frozen=True)
class ExpectedTensor:
    """A tensor an adapter must contain: its shape, and what each dimension means."""

    shape: tuple[int, ...]
    dims: tuple[str, ...]
    optional: bool = False
    #: saved under this key alone, with no ``base_model.…`` prefix (PEFT's ``prompt_embeddings``)
    top_level: bool = False


def check_adapter(
    signature: Signature, config: AdapterConfig, found: Mapping[str, tuple[int, ...]]
) -> list[Problem]:
    """Every way the tensors ``found`` (on-disk key -> shape) fail to fit ``signature`` under ``config``."""
    tuner = get_method(config.peft_type).tuner
    prefix = tuner.disk_prefix
    try:
        expected: dict[str, ExpectedTensor] = tuner.expected_shapes(config, signature)
    except AdapterError as exc:
        return [Problem(None, None, None, str(exc))]
    by_path = signature.by_path()
    problems: list[Problem] = []
    seen: set[str] = set()
    for disk_key, shape in found.items():
        key = disk_key.removeprefix(prefix)
        shape = tuple(shape)
        want = expected.get(key)
        if want is not None and want.top_level and key != disk_key:
            want = None
        if want is None:
            problems.append(Problem(disk_key, None, str(list(shape)), _unexpected(key, by_path)))
            continue
        seen.add(key)
        if shape != want.shape:
            problems.append(Problem(disk_key, str(list(want.shape)), str(list(shape)), _mismatch(key, want, shape)))
    for key in sorted(k for k in set(expected) - seen if not expected[k].optional):
        problems.append(
            Problem(key if expected[key].top_level else prefix + key, str(list(expected[key].shape)), None,
                    f"{key} is missing: the config targets this module but the file has no such tensor")
        )
    return problems


def _unexpected(key: str, by_path: Mapping[str, ModuleEntry]) -> str:
    owner = max((p for p in by_path if key.startswith(p + ".")), key=len, default=None)
    if owner is None:
        return f"{key} maps to no module of the base model signature (an adapter for another model?)"
    return f"{key}: module {owner} exists in the base model, but the adapter config does not target it this way"


def _mismatch(key: str, want: ExpectedTensor, shape: tuple[int, ...]) -> str:
    if len(shape) != len(want.shape):
        return f"{key} has {len(shape)} dimensions, expected {len(want.shape)} ({' × '.join(want.dims)})"
    parts = [
        f"{name} is {got}, expected {exp}"
        for name, got, exp in zip(want.dims, shape, want.shape, strict=True)
        if got != exp
    ]
    return f"{key}: " + "; ".join(parts)
