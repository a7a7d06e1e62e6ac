"""LoRA: low-rank adaptation (config, layers, tuner), the method ``peft_type="LORA"``."""

from .config import LoraConfig
from .layers import LoraConv1D, LoraConv2d, LoraEmbedding, LoraLayer, LoraLinear
from .tuner import LoraTuner

#: What :mod:`sdk.methods` registers from this package.
CONFIGS = (LoraConfig,)
TUNER = LoraTuner()

__all__ = ["LoraConfig", "LoraConv1D", "LoraConv2d", "LoraEmbedding", "LoraLayer", "LoraLinear", "LoraTuner"]
