"""A version's provenance in a push's form fields: ``metrics``, ``params`` and ``dataset``, each a JSON
object, bounded by :mod:`sdk.provenance` (the same checks the client runs before it sends them)."""

from __future__ import annotations

import json
from typing import Any

from sdk.problems import Problem
from sdk.provenance import PROVENANCE_NAME, dataset_problems, metrics_problems, params_problems

from ...errors import UploadRejected

#: The most bytes one provenance field may hold (64 entries of a short name and value fit many times).
MAX_FIELD_BYTES = 64 * 1024
FIELDS = {"metrics": metrics_problems, "params": params_problems, "dataset": dataset_problems}


def provenance_from_file(raw: bytes | None) -> dict[str, Any]:
    """The record of a ``provenance.json`` sent with a Hub commit (``sdk`` writes one next to trained
    adapters): the same fields and bounds as the push form's; 422 otherwise."""
    if raw is None:
        return {}
    if len(raw) > len(FIELDS) * MAX_FIELD_BYTES:
        raise UploadRejected([Problem(None, f"<= {len(FIELDS) * MAX_FIELD_BYTES} bytes", f"{len(raw)} bytes",
                                      f"{PROVENANCE_NAME} is too large")])
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise UploadRejected([Problem(None, "a JSON object", None, f"{PROVENANCE_NAME} is not JSON: {exc}"[:300])]
                             ) from exc
    if not isinstance(data, dict) or set(data) - set(FIELDS):
        raise UploadRejected([Problem(None, "an object with metrics, params, dataset", None,
                                      f"{PROVENANCE_NAME} must be an object with keys {sorted(FIELDS)}")])
    return provenance_from_form({k: json.dumps(v) for k, v in data.items()})


def provenance_from_form(form: Any) -> dict[str, Any]:
    """``{"metrics", "params", "dataset"}`` from the form (fields left out or empty are left out);
    422 listing every problem when a field is too long, not JSON or out of bounds."""
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    for field, check in FIELDS.items():
        raw = form.get(field)
        if raw is None or not str(raw).strip():
            continue
        text = str(raw)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_FIELD_BYTES:
            problems.append(Problem(None, f"<= {MAX_FIELD_BYTES} bytes", f"{size} bytes",
                                    f"the {field} field is longer than {MAX_FIELD_BYTES} bytes"))
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            problems.append(Problem(None, "a JSON object", None, f"the {field} field is not JSON: {exc}"[:300]))
            continue
        found = check(value)
        problems += [Problem(None, None, None, message) for message in found[:20]]
        if not found and value:
            out[field] = value
    if problems:
        raise UploadRejected(problems)
    return out


__all__ = ["FIELDS", "MAX_FIELD_BYTES", "provenance_from_file", "provenance_from_form"]
