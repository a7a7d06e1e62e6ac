"""LoKr: low-rank Kronecker product adapters (config, layer, tuner), the method ``peft_type="LOKR"``."""

from .config import LoKrConfig
from .layers import LoKrLayer
from .tuner import LoKrTuner, factorization

#: What :mod:`sdk.methods` registers from this package.
CONFIGS = (LoKrConfig,)
TUNER = LoKrTuner()

__all__ = ["LoKrConfig", "LoKrLayer", "LoKrTuner", "factorization"]
