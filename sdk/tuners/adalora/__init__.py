"""AdaLoRA: LoRA in SVD form whose ranks are pruned by importance while training,
registered as ``peft_type="ADALORA"`` (config, layers, rank allocator, tuner)."""

from ...methods import register_method
from .config import AdaLoraConfig, AdaLoraConfigWarning
from .layers import AdaLoraConv1D, AdaLoraConv2d, AdaLoraLayer, AdaLoraLinear
from .tuner import AdaLoraTuner

register_method("ADALORA", AdaLoraConfig, AdaLoraTuner())

__all__ = [
    "AdaLoraConfig",
    "AdaLoraConfigWarning",
    "AdaLoraConv1D",
    "AdaLoraConv2d",
    "AdaLoraLayer",
    "AdaLoraLinear",
    "AdaLoraTuner",
]
