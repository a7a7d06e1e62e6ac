"""Prompt learning: learned virtual tokens in front of the input, the base model frozen.

Three methods share one tuner: ``PROMPT_TUNING`` (a learned embedding table), ``PREFIX_TUNING``
(learned key/value states for every attention layer) and ``P_TUNING`` (embeddings from a small
prompt encoder).
"""

from .config import PrefixTuningConfig, PromptEncoderConfig, PromptLearningConfig, PromptTuningConfig
from .layer import PromptLearningLayer
from .tuner import PromptTuner

#: What :mod:`sdk.methods` registers from this package.
CONFIGS = (PromptTuningConfig, PrefixTuningConfig, PromptEncoderConfig)
TUNER = PromptTuner()

__all__ = [
    "PrefixTuningConfig",
    "PromptEncoderConfig",
    "PromptLearningConfig",
    "PromptLearningLayer",
    "PromptTuner",
    "PromptTuningConfig",
]
