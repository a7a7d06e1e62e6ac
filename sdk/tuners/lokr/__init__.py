"""LoKr: low-rank Kronecker product adapters, registered as ``peft_type="LOKR"``."""

from ...methods import register_method
from .config import LoKrConfig
from .layers import LoKrLayer, LoKrTuner, factorization

register_method("LOKR", LoKrConfig, LoKrTuner())

__all__ = ["LoKrConfig", "LoKrLayer", "LoKrTuner", "factorization"]
