"""LoHa: low-rank Hadamard product adapters, registered as ``peft_type="LOHA"``."""

from ...methods import register_method
from .config import LoHaConfig
from .layers import LoHaLayer, LoHaTuner

register_method("LOHA", LoHaConfig, LoHaTuner())

__all__ = ["LoHaConfig", "LoHaLayer", "LoHaTuner"]
