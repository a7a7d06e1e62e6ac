"""Poly (Polytropon) and multi-head routing: skills mixed per sample by a learned router, ``peft_type="POLY"``."""

from .config import PolyConfig
from .layers import PolyLayer
from .tuner import PolyTuner

#: What :mod:`sdk.methods` registers from this package.
CONFIGS = (PolyConfig,)
TUNER = PolyTuner()

__all__ = ["PolyConfig", "PolyLayer", "PolyTuner"]
