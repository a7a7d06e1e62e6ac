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
)
from .methods import config_from_dict, get_method, register_method, registered_methods
from .model import AdapterModel, get_peft_model
from .tuners.lora import LoraConfig

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from .client import Client, PushResult
    from .client.api import WeightsArg

_default_client: Client | None = None


def default_client() -> Client:
    """The client behind ``sdk.push``/``pull``/``load``/``register_base_model`` (from the environment)."""
    global _default_client
    if _default_client is None:
        from .client import Client

        _default_client = Client()
    return _default_client


def push(model_or_dir: AdapterModel | str | Path, name: str, base_model: str | None = None, **kwargs: Any
         ) -> PushResult:
    """Push an adapter (``AdapterModel`` or saved folder) as a new version; see ``Client.push``."""
    return default_client().push(model_or_dir, name, base_model, **kwargs)


def pull(ref: str, version: int | str | None = None) -> Path:
    """A local folder with ``ns/name[@ref]``; see ``Client.pull``."""
    return default_client().pull(ref, version)


def load(model: nn.Module, ref: str, adapter_name: str = "default", **kwargs: Any) -> AdapterModel:
    """Pull ``ref`` and inject it into ``model``; see ``Client.load``."""
    return default_client().load(model, ref, adapter_name, **kwargs)


def register_base_model(model_or_config: nn.Module | dict[str, Any] | str | Path, name: str,
                        revision: str | None = None, *, weights: WeightsArg = False) -> dict[str, Any]:
    """Register a base model's signature, and with ``weights`` its safetensors weights (``True``: the
    model's own); see ``Client.register_base_model``."""
    return default_client().register_base_model(model_or_config, name, revision, weights=weights)


__all__ = [
    "AdapterConfig",
    "AdapterError",
    "AdapterModel",
    "AdapterNameError",
    "AdapterStateError",
    "ConfigError",
    "FormatError",
    "LoraConfig",
    "MergeError",
    "MixedBatchError",
    "PickleRefusedError",
    "TargetModulesNotFoundError",
    "TargetingError",
    "UnsupportedLayerError",
    "config_from_dict",
    "default_client",
    "get_method",
    "get_peft_model",
    "load",
    "pull",
    "push",
    "register_base_model",
    "register_method",
    "registered_methods",
]
