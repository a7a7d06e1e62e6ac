"""Starting values of a prompt-tuning table: embeddings of a text or of random vocabulary tokens.

Nothing is downloaded: a TEXT init uses the tokenizer object given in the config, or loads one
from ``tokenizer_name_or_path`` with ``local_files_only=True``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from .config import PromptTuningConfig


def load_tokenizer(config: PromptTuningConfig) -> Any:
    """The config's tokenizer object, or the one saved in the local folder ``tokenizer_name_or_path``."""
    if config.tokenizer is not None:
        return config.tokenizer
    from transformers import AutoTokenizer

    kwargs = dict(config.tokenizer_kwargs or {})
    kwargs.pop("trust_remote_code", None)  # never run code that came with a tokenizer
    try:
        return AutoTokenizer.from_pretrained(config.tokenizer_name_or_path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load the tokenizer {config.tokenizer_name_or_path!r} for prompt_tuning_init='TEXT' (only local "
            f"folders work; nothing is downloaded): {exc}. Pass the tokenizer object as `tokenizer=` instead."
        ) from exc


def text_token_ids(config: PromptTuningConfig, rows: int) -> list[int]:
    """The init text's token ids, cut or repeated to ``rows`` (as PEFT does)."""
    tokenizer = load_tokenizer(config)
    encoded = tokenizer(config.prompt_tuning_init_text)
    ids = encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
    if not ids:
        raise ConfigError(f"prompt_tuning_init_text {config.prompt_tuning_init_text!r} tokenises to no tokens")
    return (ids * math.ceil(rows / len(ids)))[:rows]


def initial_table(config: PromptTuningConfig, word_embeddings: nn.Embedding) -> Tensor | None:
    """The starting ``rows × token_dim`` table, or None to keep the random normal init."""
    rows = config.total_virtual_tokens
    if config.prompt_tuning_init == "RANDOM":
        return None
    if config.prompt_tuning_init == "TEXT":
        try:
            ids = text_token_ids(config, rows)
        except ConfigError:
            if config._from_file:  # saved weights will replace the init anyway
                return None
            raise
        vocab = word_embeddings.num_embeddings
        bad = sorted({i for i in ids if not 0 <= i < vocab})
        if bad:
            raise ConfigError(
                f"the tokenizer gives token ids {bad[:5]} that the model's embedding (vocabulary {vocab}) does not "
                "have; use the base model's own tokenizer"
            )
        index = torch.tensor(ids, dtype=torch.long, device=word_embeddings.weight.device)
    else:  # SAMPLE_VOCAB
        index = torch.randint(0, word_embeddings.num_embeddings, (rows,), device=word_embeddings.weight.device)
    with torch.no_grad():
        return word_embeddings(index).detach().to(torch.float32).clone()
