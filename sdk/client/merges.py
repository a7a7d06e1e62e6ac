"""Asking the registry for a server-side merge: submit a merge job, follow it, get its result."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from ..errors import AdapterError
from ..names import shown
from .http import Http
from .transfers import show_progress
from .trust import UnsafeResponse, job_id

#: States after which a job never changes again.
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class MergeJobFailed(AdapterError):
    """A merge job ended failed or cancelled; ``job`` holds its last state (``error`` says why)."""

    def __init__(self, job: MergeJob) -> None:
        self.job = job
        super().__init__(f"merge job {job.id} {job.state}" + (f": {job.error}" if job.error else ""))


@dataclass
class MergeJob:
    """A merge job as the registry describes it."""

    id: str
    state: str
    progress: float
    error: str | None = None
    result: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> MergeJob:
        """A job from the registry's JSON; its id is checked (it goes into request paths)."""
        if not isinstance(body, Mapping):
            raise UnsafeResponse(f"the registry described a merge job as {type(body).__name__}, not an object")
        progress = body.get("progress") or 0.0
        if not isinstance(progress, (int, float)) or isinstance(progress, bool) or not math.isfinite(progress):
            raise UnsafeResponse(f"the registry sent the job progress {shown(progress)}, not a number")
        return cls(job_id(body.get("id")), str(body.get("state")), float(progress), body.get("error"),
                   body.get("result"), dict(body))

    @property
    def done(self) -> bool:
        return self.state in FINISHED

    @property
    def ref(self) -> str | None:
        """``ns/name@version`` of the new adapter version (adapter outputs), once succeeded."""
        return (self.result or {}).get("ref")


def merge_request(inputs: Sequence[str | tuple[str, float]], *, output: str, weights: Sequence[float] | None,
                  combination_type: str, into: str, **parameters: Any) -> dict[str, Any]:
    """The ``POST /api/v1/merge-jobs`` body. ``into``: ``"adapter"`` (a new version of ``output``) or
    ``"model"`` (a merged full model registered as base model ``output``)."""
    if into not in ("adapter", "model"):
        raise AdapterError(f"into must be 'adapter' or 'model', got {into!r}")
    if weights is not None and len(weights) != len(inputs):
        raise AdapterError(f"{len(inputs)} inputs but {len(weights)} weights")
    pairs: list[tuple[str, float]] = []
    for i, item in enumerate(inputs):
        if isinstance(item, tuple):
            pairs.append((str(item[0]), float(item[1])))
        else:
            pairs.append((str(item), float(weights[i]) if weights is not None else 1.0))
    if not pairs:
        raise AdapterError("a merge needs at least one input adapter")
    out: dict[str, Any] = {into: output}
    for key in ("alias", "description", "private"):
        if key in parameters:
            out[key] = parameters.pop(key)
    body = {"inputs": [{"ref": r, "weight": w} for r, w in pairs], "output": out, "combination_type": combination_type}
    body.update({k: v for k, v in parameters.items() if v is not None})
    return body


def follow(http: Http, job: MergeJob, *, timeout: float | None, poll: float, quiet: bool | None) -> MergeJob:
    """Poll a job until it finishes (progress bar on a terminal); raises :class:`MergeJobFailed` if it
    does not succeed and ``TimeoutError`` after ``timeout`` seconds (the job keeps running)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with tqdm(total=100, desc=f"merge {job.id[:8]}", unit="%", disable=not show_progress(quiet), leave=False) as bar:
        while not job.done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"merge job {job.id} is still {job.state} after {timeout} s")
            time.sleep(poll)
            job = MergeJob.from_json(http.json("GET", f"/api/v1/merge-jobs/{job.id}"))
            bar.update(round(job.progress * 100) - bar.n)
            bar.set_postfix_str(job.state)
    if job.state != "succeeded":
        raise MergeJobFailed(job)
    return job
