"""Bounds on a merge job, checked when it is submitted: its weights, its ``svd_rank``, and how much
memory a worker would need to run it (against ``Settings.max_merge_memory_bytes``).

The memory estimate, in bytes (float32 working copies, 4 bytes per element):

- ``INPUT_FACTOR`` × the inputs' weights files: the inputs as loaded, the combined adapter held
  before it is saved, and the saved copy read back to hash it;
- for the SVD types (two inputs or more; one input is copied as it is), the largest module the
  inputs target (``out`` × ``in`` of its weight): one dense ΔW per input, their combination and
  the SVD's U, S, Vᴴ (full matrices, as PEFT does): ``4 × ((inputs + 2) × out × in + out² + in²)``;
- for a full-model output, the largest base tensor twice (read and written) plus the merge's
  bounded ΔW blocks (``INTO_BASE_BLOCKS``).

It is an upper estimate of what :mod:`sdk.merging` holds at once, not a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sdk.merging.options import FACTOR_TYPES
from sdk.problems import Problem

#: Copies of the inputs' bytes a combination holds at once (see the module docstring).
INPUT_FACTOR = 3
#: Bytes of ΔW blocks and copy buffers a merge into the base weights holds (``chunk_bytes`` twice).
INTO_BASE_BLOCKS = 32 * 2**20
FLOAT32 = 4


def _weight_dims(shape: Sequence[int]) -> tuple[int, int]:
    """(out, in) of a weight as its ΔW is laid out: the first dimension against the rest."""
    if not shape:
        return 1, 1
    return int(shape[0]), math.prod(int(d) for d in shape[1:]) or 1


def largest_targeted(signature: Mapping[str, Any], targets: set[str]) -> tuple[int, int]:
    """(out, in) of the largest ``weight`` among the signature's modules whose last path part is in
    ``targets`` (as a version's summary lists them); (0, 0) when none is."""
    best = (0, 0)
    for module in signature.get("modules", []):
        if str(module.get("path", "")).rsplit(".", 1)[-1] not in targets:
            continue
        shape = (module.get("params") or {}).get("weight")
        if shape:
            dims = _weight_dims(shape)
            if dims[0] * dims[1] > best[0] * best[1]:
                best = dims
    return best


def largest_tensor(signature: Mapping[str, Any]) -> int:
    """Elements of the signature's largest parameter."""
    return max((math.prod(int(d) for d in shape) for module in signature.get("modules", [])
                for shape in (module.get("params") or {}).values()), default=0)


def memory_estimate(combination_type: str, input_bytes: Sequence[int], targets: set[str],
                    signature: Mapping[str, Any], *, model_output: bool) -> int:
    """Bytes a worker needs for the job, by the estimate of the module docstring."""
    total = INPUT_FACTOR * sum(input_bytes)
    if combination_type not in FACTOR_TYPES and combination_type != "cat" and len(input_bytes) > 1:
        out, inn = largest_targeted(signature, targets)
        total += FLOAT32 * ((len(input_bytes) + 2) * out * inn + out * out + inn * inn)
    if model_output:
        total += 2 * FLOAT32 * largest_tensor(signature) + INTO_BASE_BLOCKS
    return total


def check_weight(where: str, weight: object, limit: float) -> Problem | None:
    """A problem when ``weight`` is not a finite number with ``|weight| <= limit``."""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        return Problem(None, "a finite number", str(weight), f"{where}: weight must be a finite number")
    if abs(weight) > limit:
        return Problem(None, f"-{limit:g} <= weight <= {limit:g}", str(weight),
                       f"{where}: weight {weight:g} is outside ±{limit:g} (max_merge_weight); such a weight "
                       "scales the adapter into overflow")
    return None


def check_svd_rank(combination_type: str, svd_rank: int | None, ranks: Sequence[int]) -> Problem | None:
    """A problem when an SVD type asks for more rank than its inputs have together (the rank of a
    weighted sum of rank-rᵢ updates is at most Σrᵢ)."""
    if svd_rank is None or combination_type in FACTOR_TYPES or combination_type == "cat":
        return None
    bound = sum(ranks)
    if isinstance(svd_rank, int) and not isinstance(svd_rank, bool) and svd_rank > bound:
        return Problem(None, f"<= {bound} (the inputs' ranks {list(ranks)} together)", str(svd_rank),
                       f"svd_rank {svd_rank} is more than the inputs can have: their ranks add up to {bound}")
    return None


def human_bytes(n: int) -> str:
    """``n`` bytes in GiB, MiB or bytes, for messages."""
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


__all__ = ["INPUT_FACTOR", "check_svd_rank", "check_weight", "human_bytes", "largest_targeted", "largest_tensor",
           "memory_estimate"]
