"""Validating an upload before anything is stored: config, safetensors header, signature fit.

Everything here is synchronous and reads only what it needs through a ``read_at(offset,
length)`` callable (a local temp file or ranged reads of a staged object), so the service runs
it in a worker thread. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdk.config import AdapterConfig
from sdk.errors import AdapterError
from sdk.formats import PICKLE_NAMES
from sdk.methods import config_from_dict, get_method
from sdk.problems import Problem
from sdk.safetensors_header import Header, ReadAt, all_zero, non_float_problems, read_header
from sdk.signature import Signature, check_adapter

from ...errors import UploadRejected, reject

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
README_FILE = "README.md"
ALLOWED_FILES = (CONFIG_FILE, WEIGHTS_FILE, README_FILE)
MAX_CONFIG_BYTES = 1 * 2**20
MAX_README_BYTES = 1 * 2**20


def check_filename(field_name: str, filename: str | None) -> None:
    """Refuse pickles, unknown files and filenames that try to escape (``../``, absolute, NUL)."""
    for name in (field_name, filename or ""):
        if name and ("/" in name or "\\" in name or name.startswith(".") or "\x00" in name or ".." in name):
            raise reject(f"invalid filename {name!r}: plain file names only", found=name)
    if field_name in PICKLE_NAMES or (filename or "").endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")):
        raise reject(
            f"{filename or field_name} is a pickle checkpoint; the registry never loads pickles. Convert it with "
            "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'adapter_model.safetensors', "
            "metadata={'format': 'pt'})` or save with PEFT's default safe_serialization=True",
            found=filename or field_name,
        )
    if field_name not in ALLOWED_FILES:
        raise reject(f"unexpected file {field_name!r}; an adapter version holds {list(ALLOWED_FILES)}",
                     found=field_name)


def parse_config(raw: bytes) -> tuple[AdapterConfig, dict[str, Any], list[str]]:
    """The adapter config from ``adapter_config.json`` bytes, and notes (ignored keys)."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise reject(f"{CONFIG_FILE} is {len(raw)} bytes; the limit is {MAX_CONFIG_BYTES}", tensor=None,
                     expected=f"<= {MAX_CONFIG_BYTES} bytes", found=f"{len(raw)} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise reject(f"{CONFIG_FILE} is not valid UTF-8: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise reject(f"{CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise reject(f"{CONFIG_FILE} must hold a JSON object", found=type(data).__name__)
    if "peft_type" not in data:
        raise reject(f"{CONFIG_FILE} has no 'peft_type'", expected="e.g. \"LORA\"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = config_from_dict(data)
        except AdapterError as exc:
            raise reject(f"{CONFIG_FILE}: {exc}") from exc
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
        raise UploadRejected(problems)
    problems += non_float_problems(header)
    shapes = {name: info.shape for name, info in header.tensors.items()}
    problems += check_adapter(signature, config, shapes)
    if problems:
        raise UploadRejected(problems)
    tuner = get_method(config.peft_type).tuner
    zero_init = [n for n in header.tensors if tuner.zero_at_init(n)]
    if zero_init and not allow_untrained and all(all_zero(read_at, header, n) for n in zero_init):
        kinds = sorted({_factor_name(n) for n in zero_init})
        raise UploadRejected([
            Problem(None, "a trained adapter", "untrained weights",
                    f"every {'/'.join(kinds)} tensor is all zeros, so this adapter changes nothing; train it "
                    "first, or push it as an initial checkpoint (untrained=true)")
        ])
    return CheckedWeights(header, summarize(config, header))


def _factor_name(key: str) -> str:
    parts = key.split(".")
    return parts[-2] if parts[-1] == "weight" else parts[-1]


def summarize(config: AdapterConfig, header: Header) -> dict[str, Any]:
    """What a version page shows: rank, targets, parameter count, dtypes, size."""
    modules = sorted({n.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
                      for n in header.tensors if ".lora_" in n})
    cfg: Mapping[str, Any] = config.to_dict()
    return {
        "method": config.peft_type,
        "r": cfg.get("r"),
        "lora_alpha": cfg.get("lora_alpha"),
        "rank_pattern": cfg.get("rank_pattern") or {},
        "targets": sorted({m.rsplit(".", 1)[-1] for m in modules}),
        "modules": len(modules),
        "parameters": sum(info.numel for info in header.tensors.values()),
        "dtypes": sorted({info.dtype for info in header.tensors.values()}),
        "tensors": len(header.tensors),
        "weights_bytes": header.header_size + header.data_size,
    }
