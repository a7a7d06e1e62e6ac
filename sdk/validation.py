"""Checking an adapter before it is published: its config bytes and its safetensors file
against a base-model signature. The registry runs this on every upload and the SDK client
before pushing, so both give the same messages. A file that passes comes back with its version
summary (:mod:`sdk.summary`).

Everything reads through a ``read_at(offset, length)`` callable: only the header and, for the
untrained-adapter probe, the first bytes of the zero-initialised factors are read.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any

from .config import CONFIG_NAME, AdapterConfig
from .errors import AdapterError, ValidationFailed
from .methods import config_from_dict, get_method
from .problems import Problem, capped
from .safetensors_data import all_zero
from .safetensors_header import Header, ReadAt, non_float_problems, read_header
from .signature import Signature, check_adapter
from .summary import summarize

CONFIG_FILE = CONFIG_NAME
MAX_CONFIG_BYTES = 1 * 2**20


def _fail(message: str, *, expected: str | None = None, found: str | None = None) -> ValidationFailed:
    return ValidationFailed([Problem(None, expected, found, message)])


def parse_config(raw: bytes) -> tuple[AdapterConfig, dict[str, Any], list[str]]:
    """The adapter config from ``adapter_config.json`` bytes, and notes (ignored keys)."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise _fail(f"{CONFIG_FILE} is {len(raw)} bytes; the limit is {MAX_CONFIG_BYTES}",
                    expected=f"<= {MAX_CONFIG_BYTES} bytes", found=f"{len(raw)} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"{CONFIG_FILE} is not valid UTF-8: {exc}") from exc
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested deeper than json can follow
        raise _fail(f"{CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _fail(f"{CONFIG_FILE} must hold a JSON object", found=type(data).__name__)
    if "peft_type" not in data:
        raise _fail(f"{CONFIG_FILE} has no 'peft_type'", expected="e.g. \"LORA\"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = config_from_dict(data)
        except AdapterError as exc:
            raise _fail(f"{CONFIG_FILE}: {exc}") from exc
    return config, config.to_dict(), [str(w.message) for w in caught]


@dataclass
class CheckedWeights:
    """A weights file that passed every check, with what the version summary shows."""

    header: Header
    summary: dict[str, Any] = field(default_factory=dict)


def check_weights(
    read_at: ReadAt,
    size: int,
    config: AdapterConfig,
    signature: Signature,
    *,
    allow_untrained: bool = False,
    max_header_bytes: int = 16 * 2**20,
) -> CheckedWeights:
    """Validate the safetensors file against ``config`` and ``signature``; raise with every problem."""
    header, problems = read_header(read_at, size, max_header_bytes=max_header_bytes)
    if header is None:
        raise ValidationFailed(problems)
    problems += non_float_problems(header)
    shapes = {name: info.shape for name, info in header.tensors.items()}
    problems += check_adapter(signature, config, shapes)
    if problems:
        raise ValidationFailed(capped(problems))
    tuner = get_method(config.peft_type).tuner
    zero_init = [n for n in header.tensors if tuner.zero_at_init(n)]
    if zero_init and not allow_untrained and all(all_zero(read_at, header, n) for n in zero_init):
        kinds = sorted({_factor_name(n) for n in zero_init})
        raise ValidationFailed([
            Problem(None, "a trained adapter", "untrained weights",
                    f"every {'/'.join(kinds)} tensor is all zeros, so this adapter changes nothing; train it "
                    "first, or push it as an initial checkpoint (untrained=true)")
        ])
    return CheckedWeights(header, summarize(config, header))


def _factor_name(key: str) -> str:
    parts = key.split(".")
    return parts[-2] if parts[-1] == "weight" else parts[-1]
