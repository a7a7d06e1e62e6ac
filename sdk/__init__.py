"""Adapters for PyTorch models: LoRA and relatives, in PEFT's on-disk format.

Typical use::

    import sdk
    model = sdk.get_peft_model(base, sdk.LoraConfig(r=16, target_modules=["q_proj", "v_proj"]))
    ...train...
    model.save_pretrained("out")
    model = sdk.AdapterModel.from_pretrained(base, "out")
"""

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
    "get_method",
    "get_peft_model",
    "register_method",
    "registered_methods",
]
