"""LoHa: low-rank Hadamard product adapters (config, layer, tuner), the method ``peft_type="LOHA"``."""

from .config import LoHaConfig
from .layers import LoHaLayer
from .tuner import LoHaTuner

#: What :mod:`sdk.methods` registers from this package.
CONFIGS = (LoHaConfig,)
TUNER = LoHaTuner()

__all__ = ["LoHaConfig", "LoHaLayer", "LoHaTuner"]
