"""A version's provenance in a push's form fields: ``metrics``, ``params`` and ``dataset``, each a JSON
object, bounded by :mod:`sdk.provenance` (the same checks the client runs before it sends them)."""

from __future__ import annotations

import json
from typing import Any

from sdk.problems import Problem
from sdk.provenance import dataset_problems, metrics_problems, params_problems

from ...errors import UploadRejected

#: The most bytes one provenance field may hold (64 entries of a short name and value fit many times).
MAX_FIELD_BYTES = 64 * 1024
FIELDS = {"metrics": metrics_problems, "params": params_problems, "dataset": dataset_problems}


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
        if len(text.encode()) > MAX_FIELD_BYTES:
            problems.append(Problem(None, f"<= {MAX_FIELD_BYTES} bytes", f"{len(text.encode())} bytes",
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


__all__ = ["FIELDS", "MAX_FIELD_BYTES", "provenance_from_form"]
