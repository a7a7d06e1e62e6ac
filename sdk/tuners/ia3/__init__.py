"""(IA)³: learned scaling vectors (config, layer, tuner), the method ``peft_type="IA3"``."""

from .config import IA3Config
from .layers import IA3Layer
from .tuner import IA3Tuner

#: What :mod:`sdk.methods` registers from this package.
CONFIGS = (IA3Config,)
TUNER = IA3Tuner()

__all__ = ["IA3Config", "IA3Layer", "IA3Tuner"]
