"""Configs of the prompt-learning methods, as PEFT writes them in ``adapter_config.json``.

``PromptTuningConfig`` (``PROMPT_TUNING``), ``PrefixTuningConfig`` (``PREFIX_TUNING``) and
``PromptEncoderConfig`` (``P_TUNING``) share the fields of :class:`PromptLearningConfig`. The
model-size fields (``token_dim``, ``num_layers``, ``num_attention_heads``,
``num_transformer_submodules``, ``encoder_hidden_size``) may be left unset: they are filled from
the base model's config when the adapter is added, and saved, as PEFT does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from ...config import AdapterConfig
from ...errors import ConfigError

_IGNORED = frozenset({"peft_version", "auto_mapping"})

PROMPT_TUNING_INITS = ("RANDOM", "TEXT", "SAMPLE_VOCAB")
ENCODER_TYPES = ("MLP", "LSTM")


def _positive_int(name: str, value: Any, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"`{name}` must be a positive integer, got {value!r}")


def _enum_value(value: Any) -> Any:
    """PEFT's str enums (``PromptTuningInit.TEXT``) as their plain string."""
    return getattr(value, "value", value)


@dataclasses.dataclass
class PromptLearningConfig(AdapterConfig):
    """Learned virtual tokens placed in front of every input; the base model stays frozen."""

    ignored_keys: ClassVar[frozenset[str]] = _IGNORED

    num_virtual_tokens: int | None = None
    token_dim: int | None = None
    num_transformer_submodules: int | None = None
    num_attention_heads: int | None = None
    num_layers: int | None = None
    modules_to_save: list[str] | None = None

    def validate(self) -> None:
        if self.num_virtual_tokens is None:
            raise ConfigError(f"{type(self).__name__} needs `num_virtual_tokens` (how many virtual tokens to learn)")
        _positive_int("num_virtual_tokens", self.num_virtual_tokens, optional=False)
        for name in ("token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers"):
            _positive_int(name, getattr(self, name))
        if self.num_transformer_submodules not in (None, 1):
            raise ConfigError(
                f"num_transformer_submodules={self.num_transformer_submodules}: prompts for encoder-decoder models "
                "(two transformer stacks) are not supported; use a decoder-only or encoder-only model"
            )
        if self.modules_to_save is not None:
            if isinstance(self.modules_to_save, (set, frozenset, tuple)):
                self.modules_to_save = sorted(self.modules_to_save)
            if not isinstance(self.modules_to_save, list) or not all(isinstance(v, str) for v in self.modules_to_save):
                raise ConfigError(f"`modules_to_save` must be a list of module names, got {self.modules_to_save!r}")

    @property
    def is_prompt_learning(self) -> bool:
        """PEFT's flag for methods that add virtual tokens instead of changing layers."""
        return True

    @property
    def total_virtual_tokens(self) -> int:
        """Rows of the prompt table: ``num_virtual_tokens × num_transformer_submodules``."""
        return int(self.num_virtual_tokens or 0) * int(self.num_transformer_submodules or 1)

    def table_width(self) -> int:
        """Columns of the saved ``prompt_embeddings`` tensor (``token_dim`` for input-side prompts)."""
        return int(self.token_dim or 0)


@dataclasses.dataclass
class PromptTuningConfig(PromptLearningConfig):
    """Prompt tuning: a learned table of input embeddings put before the token embeddings.

    ``prompt_tuning_init``: ``"RANDOM"`` (normal), ``"SAMPLE_VOCAB"`` (embeddings of random
    vocabulary tokens) or ``"TEXT"`` (embeddings of ``prompt_tuning_init_text``, tokenised by
    ``tokenizer`` — an object, not saved — or by ``tokenizer_name_or_path``, a local folder).
    """

    peft_type: ClassVar[str] = "PROMPT_TUNING"
    display_name: ClassVar[str] = "prompt tuning"

    prompt_tuning_init: str = "RANDOM"
    prompt_tuning_init_text: str | None = None
    tokenizer_name_or_path: str | None = None
    tokenizer_kwargs: dict[str, Any] | None = None
    tokenizer: Any = dataclasses.field(default=None, repr=False, compare=False)
    #: set by :meth:`from_dict`: a config read from a file describes saved weights, so a TEXT
    #: init whose tokenizer is not at hand is skipped (the file's weights replace it anyway).
    _from_file: bool = dataclasses.field(default=False, repr=False, compare=False)

    def validate(self) -> None:
        super().validate()
        self.prompt_tuning_init = str(_enum_value(self.prompt_tuning_init)).upper()
        if self.prompt_tuning_init not in PROMPT_TUNING_INITS:
            raise ConfigError(
                f"prompt_tuning_init={self.prompt_tuning_init!r} is not one of {', '.join(PROMPT_TUNING_INITS)}"
            )
        if self.prompt_tuning_init == "TEXT" and not self._from_file:
            if not self.prompt_tuning_init_text:
                raise ConfigError("prompt_tuning_init='TEXT' needs `prompt_tuning_init_text` (the text to start from)")
            if self.tokenizer is None and not self.tokenizer_name_or_path:
                raise ConfigError(
                    "prompt_tuning_init='TEXT' needs a tokenizer: pass `tokenizer=` (a tokenizer object) or "
                    "`tokenizer_name_or_path=` (a local folder; nothing is downloaded)"
                )
        elif self.tokenizer_kwargs and self.prompt_tuning_init != "TEXT":
            raise ConfigError("`tokenizer_kwargs` is only used with prompt_tuning_init='TEXT'")
        if self.tokenizer is not None and not callable(self.tokenizer):
            raise ConfigError(f"`tokenizer` must be a tokenizer (callable on a string), got {type(self.tokenizer)}")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("tokenizer", None)
        out.pop("_from_file", None)
        if out.get("prompt_tuning_init") == "TEXT" and not out.get("tokenizer_name_or_path"):
            # peft refuses a TEXT config without a tokenizer path; record where the tokenizer came from
            out["tokenizer_name_or_path"] = getattr(self.tokenizer, "name_or_path", None) or None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """A saved config: its weights come from the file, so a TEXT init needs no tokenizer."""
        clean = {k: v for k, v in data.items() if k not in ("tokenizer", "_from_file")}
        return super().from_dict({**clean, "_from_file": True})


@dataclasses.dataclass
class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning: learned key/value states put before every attention layer's own.

    ``prefix_projection=True`` trains the prefix through a two-layer MLP (hidden size
    ``encoder_hidden_size``); only its output is saved, so a loaded adapter uses that output
    directly. ``init_weights="zero"`` starts from an all-zero prefix.
    """

    peft_type: ClassVar[str] = "PREFIX_TUNING"
    display_name: ClassVar[str] = "prefix tuning"

    encoder_hidden_size: int | None = None
    prefix_projection: bool = False
    init_weights: str | None = None

    def validate(self) -> None:
        super().validate()
        _positive_int("encoder_hidden_size", self.encoder_hidden_size)
        if not isinstance(self.prefix_projection, bool):
            raise ConfigError(f"`prefix_projection` must be true or false, got {self.prefix_projection!r}")
        if self.init_weights not in (None, "zero"):
            raise ConfigError(f"`init_weights` must be null (random) or 'zero', got {self.init_weights!r}")

    def table_width(self) -> int:
        """Each virtual token holds a key and a value for every layer: ``num_layers × 2 × token_dim``."""
        return int(self.num_layers or 0) * 2 * int(self.token_dim or 0)

    @property
    def total_virtual_tokens(self) -> int:
        """PEFT saves one row per virtual token for prefixes, whatever ``num_transformer_submodules``."""
        return int(self.num_virtual_tokens or 0)


@dataclasses.dataclass
class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning: virtual-token embeddings produced by a small encoder (MLP, or LSTM + MLP).

    Only the encoder's output is saved, so a loaded adapter uses that output directly.
    """

    peft_type: ClassVar[str] = "P_TUNING"
    display_name: ClassVar[str] = "P-tuning"

    encoder_reparameterization_type: str = "MLP"
    encoder_hidden_size: int | None = None
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0

    def validate(self) -> None:
        super().validate()
        self.encoder_reparameterization_type = str(_enum_value(self.encoder_reparameterization_type)).upper()
        if self.encoder_reparameterization_type not in ENCODER_TYPES:
            raise ConfigError(
                f"encoder_reparameterization_type={self.encoder_reparameterization_type!r} is not one of "
                f"{', '.join(ENCODER_TYPES)}"
            )
        _positive_int("encoder_hidden_size", self.encoder_hidden_size)
        _positive_int("encoder_num_layers", self.encoder_num_layers, optional=False)
        dropout = self.encoder_dropout
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"`encoder_dropout` must be a number in [0, 1), got {dropout!r}")
