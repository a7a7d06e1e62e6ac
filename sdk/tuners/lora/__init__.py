"""LoRA: low-rank adaptation (config, layers, tuner), registered as ``peft_type="LORA"``."""

from ...methods import register_method
from .config import LoraConfig
from .layers import LoraConv1D, LoraConv2d, LoraEmbedding, LoraLayer, LoraLinear
from .tuner import LoraTuner

register_method("LORA", LoraConfig, LoraTuner())

__all__ = ["LoraConfig", "LoraConv1D", "LoraConv2d", "LoraEmbedding", "LoraLayer", "LoraLinear", "LoraTuner"]
