"""Where a version came from: metrics, training parameters, the dataset (name + sha256) and a description.

The same bounds hold in the SDK (before a push) and in the registry (on every write), so a record the SDK
accepts is one the registry stores. A record is plain JSON: ``{"metrics": {name: finite number},
"params": {name: scalar}, "dataset": {"name": str, "sha256": hex}}``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

PROVENANCE_NAME = "provenance.json"
#: How many metrics and parameters a version may carry, each.
MAX_ENTRIES = 64
#: A metric or parameter name: at most this many characters of letters, digits and ``_ . / -``.
MAX_KEY_CHARS = 64
#: A string parameter's value, and a dataset name, at most this many characters.
MAX_VALUE_CHARS = 256
_KEY = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_./-]{0,63}\Z")
_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def metrics_problems(metrics: object) -> list[str]:
    """Why ``metrics`` is not ``{name: finite number}`` within the bounds (empty: fine)."""
    return _mapping_problems("metrics", metrics, _number_problem)


def params_problems(params: object) -> list[str]:
    """Why ``params`` is not ``{name: finite number | bool | short string | null}`` within the bounds."""
    return _mapping_problems("params", params, _scalar_problem)


def dataset_problems(dataset: object) -> list[str]:
    """Why ``dataset`` is not ``{"name": str, "sha256": 64 hex}`` (``sha256`` may be left out)."""
    if not isinstance(dataset, Mapping):
        return [f"dataset must be an object {{name, sha256}}, not {type(dataset).__name__}"]
    problems = [f"dataset: unknown key {str(k)[:40]!r} (use name and sha256)" for k in dataset
                if k not in ("name", "sha256")]
    name = dataset.get("name")
    if not isinstance(name, str) or not name.strip() or _text_problem(name):
        problems.append(f"dataset.name must be a non-empty string of at most {MAX_VALUE_CHARS} characters "
                        "without control characters")
    sha = dataset.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA256.match(sha)):
        problems.append("dataset.sha256 must be 64 lowercase hex digits")
    return problems


def provenance_problems(record: Mapping[str, Any]) -> list[str]:
    """Every problem of a whole record (keys ``metrics``, ``params``, ``dataset``, each optional)."""
    problems = [f"unknown provenance key {str(k)[:40]!r}" for k in record if k not in ("metrics", "params", "dataset")]
    if record.get("metrics") is not None:
        problems += metrics_problems(record["metrics"])
    if record.get("params") is not None:
        problems += params_problems(record["params"])
    if record.get("dataset") is not None:
        problems += dataset_problems(record["dataset"])
    return problems


def check_provenance(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` without empty parts; raises :class:`ConfigError` listing every problem."""
    problems = provenance_problems(record)
    if problems:
        raise ConfigError("; ".join(problems))
    return {k: dict(v) for k, v in record.items() if v}


def dataset_record(name: str, examples: Iterable[Any] | None = None, *, sha256: str | None = None) -> dict[str, str]:
    """``{"name", "sha256"}`` for a dataset; the hash of ``examples`` is computed when not given
    (:func:`dataset_sha256`)."""
    out = {"name": name}
    digest = sha256 or (dataset_sha256(examples) if examples is not None else None)
    if digest:
        out["sha256"] = digest
    return out


def dataset_sha256(examples: Iterable[Any]) -> str | None:
    """A sha256 over the examples' tensors and values, in order (None when an example cannot be hashed:
    an iterator would be consumed, so only sized collections and ``datasets.Dataset`` are read)."""
    if not hasattr(examples, "__len__") or not hasattr(examples, "__getitem__"):
        return None
    h = hashlib.sha256()
    try:
        for i in range(len(examples)):  # type: ignore[arg-type]
            _feed(h, examples[i])  # type: ignore[index]
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError):
        return None
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    import torch

    if isinstance(value, Mapping):
        for key in sorted(value):
            h.update(str(key).encode() + b"\0")
            _feed(h, value[key])
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for item in value:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(value, (str, int, float, bool)) or value is None:
        h.update(json.dumps(value).encode() + b"\0")
    else:
        raise TypeError(type(value).__name__)


def record_training(model: Any, metrics: Mapping[str, Any], params: Mapping[str, Any],
                    dataset: Mapping[str, str] | None) -> None:
    """Keep a training run's record on ``model.provenance`` for each active adapter (a model without
    ``provenance``, i.e. not an ``AdapterModel``, is left alone). Values out of bounds are dropped, not
    raised: recording never stops a training run."""
    store = getattr(model, "provenance", None)
    if not isinstance(store, dict):
        return
    clean_metrics = {k: float(v) for k, v in list(metrics.items())[:MAX_ENTRIES]
                     if not metrics_problems({k: v})}
    clean_params = {k: v for k, v in list(params.items())[:MAX_ENTRIES] if not params_problems({k: v})}
    record: dict[str, Any] = {"metrics": clean_metrics, "params": clean_params}
    if dataset and not dataset_problems(dataset):
        record["dataset"] = dict(dataset)
    for name in getattr(model, "active_adapters", []):
        store[name] = {k: v for k, v in record.items() if v}


def write_provenance(folder: str | Path, record: Mapping[str, Any]) -> Path:
    """Save ``record`` as ``provenance.json`` in ``folder`` (checked first)."""
    path = Path(folder) / PROVENANCE_NAME
    path.write_text(json.dumps(check_provenance(record), indent=2, sort_keys=True), encoding="utf-8")
    return path


def read_provenance(folder: str | Path) -> dict[str, Any]:
    """``provenance.json`` of ``folder`` (empty when there is none), checked."""
    path = Path(folder) / PROVENANCE_NAME
    if not path.is_file():
        return {}
    if path.stat().st_size > 1 << 20:
        raise ConfigError(f"{path} is larger than 1 MiB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return check_provenance(data)


def _mapping_problems(what: str, value: object, item_problem: Any) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{what} must be an object of name: value, not {type(value).__name__}"]
    problems = []
    if len(value) > MAX_ENTRIES:
        problems.append(f"{what} has {len(value)} entries; at most {MAX_ENTRIES}")
    for key, item in list(value.items())[: MAX_ENTRIES + 1]:
        if not isinstance(key, str) or not _KEY.match(key):
            problems.append(f"{what}: name {str(key)[:80]!r} must be 1-{MAX_KEY_CHARS} letters, digits or _ . / - "
                            "(starting with a letter, digit or _)")
            continue
        problem = item_problem(item)
        if problem:
            problems.append(f"{what}.{key}: {problem}")
    return problems


def _text_problem(value: str) -> str | None:
    """Why a string value cannot be stored: too long, control characters, or not encodable (lone surrogates)."""
    if len(value) > MAX_VALUE_CHARS or _CONTROL.search(value):
        return f"a string of at most {MAX_VALUE_CHARS} characters without control characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "a string must be valid Unicode (no lone surrogates)"
    return None


def _number_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, not {type(value).__name__}"
    if isinstance(value, int) and abs(value) >= 1 << 53:
        return "an integer must lie within ±2^53"
    if not math.isfinite(value):
        return "must be finite (no NaN or infinity)"
    return None


def _scalar_problem(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _text_problem(value)
    return _number_problem(value)


__all__ = [
    "MAX_ENTRIES",
    "PROVENANCE_NAME",
    "check_provenance",
    "dataset_problems",
    "dataset_record",
    "dataset_sha256",
    "metrics_problems",
    "params_problems",
    "provenance_problems",
    "read_provenance",
    "record_training",
    "write_provenance",
]
