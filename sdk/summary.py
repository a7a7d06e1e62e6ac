"""The summary of an adapter version that the registry stores and its pages show.

Built from the adapter's config and its safetensors header alone (no tensor is read). What is
particular to a method (which config fields give its size, how its tensor names mark the end of
a module path) comes from the method's tuner.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .config import AdapterConfig
from .methods import Tuner, get_method
from .safetensors_header import Header


def summarize(config: AdapterConfig, header: Header) -> dict[str, Any]:
    """What a version page shows: rank (or virtual tokens), targets, parameter count, dtypes, size."""
    tuner = get_method(config.peft_type).tuner
    modules = adapted_modules(tuner, header.tensors)
    size = tuner.summary_fields(config)
    summary = {
        "method": config.peft_type,
        "r": size.get("r"),
        "lora_alpha": size.get("lora_alpha"),
        "rank_pattern": size.get("rank_pattern") or {},
        "targets": sorted({m.rsplit(".", 1)[-1] for m in modules}),
        "modules": len(modules),
        "parameters": sum(info.numel for info in header.tensors.values()),
        "dtypes": sorted({info.dtype for info in header.tensors.values()}),
        "tensors": len(header.tensors),
        "weights_bytes": header.header_size + header.data_size,
    }
    if size.get("num_virtual_tokens"):
        summary["num_virtual_tokens"] = size["num_virtual_tokens"]
    return summary


def adapted_modules(tuner: Tuner, keys: Iterable[str]) -> list[str]:
    """Sorted paths of the modules whose tensors the method added among on-disk ``keys``."""
    if not tuner.factor_prefixes:
        return []
    factor = re.compile(r"\.(?:" + "|".join(re.escape(p) for p in tuner.factor_prefixes) + ")")
    return sorted({factor.split(k.removeprefix(tuner.disk_prefix), 1)[0] for k in keys if factor.search(k)})
