"""Merge-job pages: the newest jobs, one job with its parameters and inputs, cancelling, and a small
JSON answer that ``app.js`` polls to update progress in place (no page reloads)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.auth.tokens import Principal
from ..domain.merge_jobs import service as merge_jobs
from ..domain.merge_jobs.queue import last_worker_heartbeat
from ..errors import NotFound
from .pages import render
from .views import duration

#: A worker that has not been heard from for this long is taken to be gone (the page then warns).
WORKER_SILENCE = dt.timedelta(minutes=2)


async def _worker_missing(db: AsyncSession, jobs: list[merge_jobs.JobView]) -> bool:
    """Whether jobs wait while no worker has been seen lately."""
    if not any(j.active for j in jobs):
        return False
    seen = await last_worker_heartbeat(db)
    return seen is None or dt.datetime.now(dt.UTC) - seen > WORKER_SILENCE


async def _job(db: AsyncSession, viewer: Principal, job_id: str) -> merge_jobs.JobView:
    job = await merge_jobs.find_view(db, viewer, job_id)
    if job is None:
        raise NotFound(f"merge job {job_id!r} not found")
    return job


class JobPages(Controller):
    """Merge jobs and their progress."""

    include_in_schema = False

    @get("/jobs")
    async def job_list(self, request: Request, db: AsyncSession, viewer: Principal) -> Template:
        """The newest merge jobs the viewer may see (public ones for everyone)."""
        items = await merge_jobs.list_views(db, viewer)
        return render(request, viewer, "jobs.html", jobs=items, worker_missing=await _worker_missing(db, items))

    @get("/jobs/{job_id:str}")
    async def job_page(self, request: Request, job_id: str, db: AsyncSession, viewer: Principal) -> Template:
        """One merge job: inputs, parameters, timing, and Cancel for writers of its namespace."""
        job = await _job(db, viewer, job_id)
        return render(request, viewer, "job.html", job=job, worker_missing=await _worker_missing(db, [job]),
                      duration=duration(job.started_at, job.finished_at),
                      can_cancel=job.active and not job.cancel_requested and viewer.can_write(job.namespace))

    @get("/jobs/{job_id:str}/status")
    async def job_status(self, request: Request, job_id: str, db: AsyncSession, viewer: Principal) -> Response:
        """What the page shows of a job, as JSON: state, percent, and its table row rendered again."""
        job = await _job(db, viewer, job_id)
        env = request.app.template_engine.engine  # type: ignore[attr-defined]
        row = env.get_template("_job_row.html").render(job=job)
        body: dict[str, Any] = {"id": job.id, "state": job.state, "percent": job.percent, "active": job.active,
                                "duration": duration(job.started_at, job.finished_at), "row": row}
        return Response(body, headers={"Cache-Control": "no-store"})

    @post("/jobs/{job_id:str}/cancel", status_code=303)
    async def cancel(self, job_id: str, db: AsyncSession, viewer: Principal) -> Response:
        """Cancel (writers of the job's namespace): a queued job at once, a running one at its next step."""
        await merge_jobs.cancel(db, viewer, job_id)
        await db.commit()
        return Redirect(f"/jobs/{job_id}", status_code=303)


__all__ = ["JobPages"]
