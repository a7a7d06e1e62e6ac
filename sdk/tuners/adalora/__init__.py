"""AdaLoRA: LoRA in SVD form whose ranks are pruned by importance while training,
the method ``peft_type="ADALORA"`` (config, layers, rank allocator, tuner)."""

from .config import AdaLoraConfig, AdaLoraConfigWarning
from .layers import AdaLoraConv1D, AdaLoraConv2d, AdaLoraLayer, AdaLoraLinear
from .tuner import AdaLoraTuner

#: What :mod:`sdk.methods` registers from this package.
CONFIGS = (AdaLoraConfig,)
TUNER = AdaLoraTuner()

__all__ = [
    "AdaLoraConfig",
    "AdaLoraConfigWarning",
    "AdaLoraConv1D",
    "AdaLoraConv2d",
    "AdaLoraLayer",
    "AdaLoraLinear",
    "AdaLoraTuner",
]
