"""Prompt learning: learned virtual tokens in front of the input, the base model frozen.

Registered as ``PROMPT_TUNING`` (a learned embedding table), ``PREFIX_TUNING`` (learned key/value
states for every attention layer) and ``P_TUNING`` (embeddings from a small prompt encoder).
"""

from ...methods import register_method
from .config import PrefixTuningConfig, PromptEncoderConfig, PromptLearningConfig, PromptTuningConfig
from .layer import PromptLearningLayer
from .tuner import PromptTuner

_TUNER = PromptTuner()
register_method("PROMPT_TUNING", PromptTuningConfig, _TUNER)
register_method("PREFIX_TUNING", PrefixTuningConfig, _TUNER)
register_method("P_TUNING", PromptEncoderConfig, _TUNER)

__all__ = [
    "PrefixTuningConfig",
    "PromptEncoderConfig",
    "PromptLearningConfig",
    "PromptLearningLayer",
    "PromptTuner",
    "PromptTuningConfig",
]
