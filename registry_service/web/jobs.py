"""Merge jobs as the pages show them.

The seam for server-side merges (issue 7): :func:`list_jobs` and :func:`get_job` are the only
places the UI reads jobs from. The registry has no merge-job table yet, so they answer "none";
once jobs exist they should map each row to a :class:`JobView` (and apply the same visibility
rules as the jobs API), and the pages, including their live progress, work unchanged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

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
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        """Still queued or running (its page refreshes itself)."""
        return self.state in ACTIVE

    @property
    def percent(self) -> int:
        return round(100 * (self.progress or 0.0))


async def list_jobs(db: AsyncSession, viewer: Principal, *, limit: int = 50) -> list[JobView]:
    """The newest jobs the viewer may see. None yet: the registry has no merge jobs (issue 7)."""
    del db, viewer, limit
    return []


async def get_job(db: AsyncSession, viewer: Principal, job_id: str) -> JobView | None:
    """One job, or None when missing or not visible. None yet: the registry has no merge jobs (issue 7)."""
    del db, viewer, job_id
    return None
