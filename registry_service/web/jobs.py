"""Merge jobs as the pages show them.

The seam for server-side merges (issue 7): :func:`list_jobs` and :func:`get_job` are the only
places the UI reads jobs from; they map ``merge_job`` rows to :class:`JobView` with the same
visibility rules as the jobs API (``domain/merge_jobs/service.py``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import MergeJob
from ..domain.auth.tokens import Principal

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = frozenset({"queued", "running"})


@dataclass(frozen=True)
class JobView:
    """One merge job: what it combines, how far it got, and what it produced."""

    id: str
    state: str
    method: str
    inputs: list[str] = field(default_factory=list)
    output: str | None = None
    #: 0.0 … 1.0, None while unknown.
    progress: float | None = None
    error: str | None = None
    #: ``ns/name@version`` of the published result, once there is one.
    result: str | None = None
    #: ``ns/name`` of the base model a full-model merge registered, once there is one.
    result_model: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        """Still queued or running (its page refreshes itself)."""
        return self.state in ACTIVE

    @property
    def percent(self) -> int:
        return round(100 * (self.progress or 0.0))


async def _view(db: AsyncSession, row: MergeJob) -> JobView:
    """A job row as the pages show it (the same JSON form the jobs API answers with)."""
    from ..domain.merge_jobs.service import describe

    body = await describe(db, row)
    result = body["result"] or {}
    return JobView(
        id=body["id"], state=body["state"], method=body["combination_type"],
        inputs=[f"{i['adapter']}@{i['version']} ×{i['weight']}" for i in body["inputs"]],
        output=f"{body['output']['name']} ({body['output']['kind']})", progress=body["progress"],
        error=body["error"], result=result.get("ref"),  # ns/name@version of a merged adapter version
        result_model=result.get("model"),  # ns/name of a merged full model (a base model)
        created_at=row.created_at, updated_at=row.updated_at,
    )


async def list_jobs(db: AsyncSession, viewer: Principal, *, limit: int = 50) -> list[JobView]:
    """The newest jobs the viewer may see (the jobs API's visibility rules)."""
    from ..domain.merge_jobs.service import list_jobs as newest

    rows, _ = await newest(db, viewer, limit=limit)
    return [await _view(db, r) for r in rows]


async def get_job(db: AsyncSession, viewer: Principal, job_id: str) -> JobView | None:
    """One job, or None when missing or not visible."""
    from ..domain.merge_jobs.service import get_job as one
    from ..errors import NotFound

    try:
        return await _view(db, await one(db, viewer, job_id))
    except NotFound:
        return None
