"""Adapters for PyTorch models: LoRA and relatives, in PEFT's on-disk format.

Typical use::

    import sdk
    model = sdk.get_peft_model(base, sdk.LoraConfig(r=16, target_modules=["q_proj", "v_proj"]))
    ...train...
    model.save_pretrained("out")
    model = sdk.AdapterModel.from_pretrained(base, "out")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import AdapterConfig
from .errors import (
    AdapterError,
    AdapterNameError,
    AdapterStateError,
    ConfigError,
    FormatError,
    MergeError,
    MixedBatchError,
    PickleRefusedError,
    TargetingError,
    TargetModulesNotFoundError,
    UnsupportedLayerError,
    ValidationFailed,
)
from .hotswap import hotswap_adapter, hotswap_adapter_from_state_dict, prepare_model_for_compiled_hotswap
from .kbit import prepare_model_for_kbit_training
from .merge_files import combine_lora_adapter_dirs, merge_adapter_into_base
from .merging.combine import combine_lora_adapters
from .methods import config_from_dict, get_method, register_method, registered_methods
from .model import AdapterModel, get_peft_model
from .quantization import QuantizedMergeWarning
from .training import Trainer, TrainingConfig, TrainResult, collate_batch, train
from .tuners.adalora import AdaLoraConfig
from .tuners.ia3 import IA3Config
from .tuners.loha import LoHaConfig
from .tuners.lokr import LoKrConfig
from .tuners.lora import LoraConfig
from .tuners.lora.arrow import ArrowConfig
from .tuners.lora.arrow_model import create_arrow_model
from .tuners.poly import PolyConfig
from .tuners.prompt import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from torch import nn

    from .client.api import Client, PushResult, WeightsArg
    from .client.config import save_login
    from .client.http import RegistryAuthError, RegistryError, RegistryNotFound, RegistryUnavailable
    from .client.merges import MergeJob, MergeJobFailed
    from .client.transfers import IntegrityError
    from .client.trust import UnsafeResponse
    from .integrations.transformers import AdapterTrainerCallback

#: Names resolved on first use, so that ``import sdk`` does not import httpx or transformers:
#: the registry client, its errors, and the ``transformers.Trainer`` callback.
_LAZY = {
    "Client": "sdk.client.api",
    "PushResult": "sdk.client.api",
    "MergeJob": "sdk.client.merges",
    "MergeJobFailed": "sdk.client.merges",
    "IntegrityError": "sdk.client.transfers",
    "RegistryError": "sdk.client.http",
    "RegistryAuthError": "sdk.client.http",
    "RegistryNotFound": "sdk.client.http",
    "RegistryUnavailable": "sdk.client.http",
    "UnsafeResponse": "sdk.client.trust",
    "save_login": "sdk.client.config",
    "AdapterTrainerCallback": "sdk.integrations.transformers",
}
#: Subpackages reachable as attributes (``sdk.client.Client``), imported on first use.
_SUBMODULES = ("client", "integrations", "merging", "cli")


def __getattr__(name: str) -> Any:
    """Import the lazily exported names and subpackages on first access."""
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"sdk.{name}")
    raise AttributeError(f"module 'sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


_default_client: Client | None = None


def default_client() -> Client:
    """The client behind ``sdk.push``/``pull``/``load``/``register_base_model`` (from the environment)."""
    global _default_client
    if _default_client is None:
        from .client import Client

        _default_client = Client()
    return _default_client


def push(model_or_dir: AdapterModel | Any | str | Path, name: str, base_model: str | None = None, **kwargs: Any
         ) -> PushResult:
    """Push an adapter (``AdapterModel``, ``peft.PeftModel`` or a folder in PEFT's format) as a new version,
    with its provenance (``metrics=``, ``params=``, ``dataset=``, ``description=``); see ``Client.push``."""
    return default_client().push(model_or_dir, name, base_model, **kwargs)


def pull(ref: str, version: int | str | None = None, *, expect_commit: str | None = None) -> Path:
    """A local folder with ``ns/name[@ref]`` (named by its commit); see ``Client.pull``."""
    return default_client().pull(ref, version, expect_commit=expect_commit)


def load(model: nn.Module, ref: str, adapter_name: str = "default", **kwargs: Any) -> AdapterModel:
    """Pull ``ref`` and inject it into ``model``; see ``Client.load``."""
    return default_client().load(model, ref, adapter_name, **kwargs)


def merge(inputs: Sequence[str | tuple[str, float]], output: str, **kwargs: Any) -> MergeJob:
    """Ask the registry for a server-side merge of adapter versions; see ``Client.merge``."""
    return default_client().merge(inputs, output, **kwargs)


def register_base_model(model_or_config: nn.Module | dict[str, Any] | str | Path, name: str,
                        revision: str | None = None, *, weights: WeightsArg = False,
                        license: str | None = None) -> dict[str, Any]:
    """Register a base model's signature, and with ``weights`` its safetensors weights (``True``: the
    model's own); see ``Client.register_base_model``."""
    return default_client().register_base_model(model_or_config, name, revision, weights=weights, license=license)


__all__ = [
    "AdaLoraConfig",
    "AdapterConfig",
    "AdapterError",
    "AdapterModel",
    "AdapterNameError",
    "AdapterStateError",
    "AdapterTrainerCallback",
    "ArrowConfig",
    "Client",
    "ConfigError",
    "FormatError",
    "IA3Config",
    "IntegrityError",
    "LoHaConfig",
    "LoKrConfig",
    "LoraConfig",
    "MergeError",
    "MergeJob",
    "MergeJobFailed",
    "MixedBatchError",
    "PickleRefusedError",
    "PolyConfig",
    "PrefixTuningConfig",
    "PromptEncoderConfig",
    "PromptTuningConfig",
    "PushResult",
    "QuantizedMergeWarning",
    "RegistryAuthError",
    "RegistryError",
    "RegistryNotFound",
    "RegistryUnavailable",
    "TargetModulesNotFoundError",
    "TargetingError",
    "TrainResult",
    "Trainer",
    "TrainingConfig",
    "UnsafeResponse",
    "UnsupportedLayerError",
    "ValidationFailed",
    "collate_batch",
    "combine_lora_adapter_dirs",
    "combine_lora_adapters",
    "config_from_dict",
    "create_arrow_model",
    "default_client",
    "get_method",
    "get_peft_model",
    "hotswap_adapter",
    "hotswap_adapter_from_state_dict",
    "load",
    "merge",
    "merge_adapter_into_base",
    "prepare_model_for_compiled_hotswap",
    "prepare_model_for_kbit_training",
    "pull",
    "push",
    "register_base_model",
    "register_method",
    "registered_methods",
    "save_login",
    "train",
]
