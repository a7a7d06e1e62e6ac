"""(IA)³: learned scaling vectors (config, layer, tuner), registered as ``peft_type="IA3"``."""

from ...methods import register_method
from .config import IA3Config
from .layers import IA3Layer
from .tuner import IA3Tuner

register_method("IA3", IA3Config, IA3Tuner())

__all__ = ["IA3Config", "IA3Layer", "IA3Tuner"]
