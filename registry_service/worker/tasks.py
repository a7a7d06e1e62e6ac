"""The merge task as procrastinate runs it: a thin shell around
:func:`registry_service.domain.merge_jobs.execute.run_job`."""

from __future__ import annotations

import uuid

import procrastinate
from procrastinate.job_context import JobContext

from ..domain.merge_jobs.execute import run_job
from ..domain.merge_jobs.queue import QUEUE, TASK
from ..settings import WorkerSettings


def register_tasks(app: procrastinate.App, worker: WorkerSettings) -> None:
    """Add the merge task to ``app``. Unexpected errors are retried by the queue up to
    ``worker.max_attempts`` runs in all; the runner knows which run is the last one."""
    retries = worker.max_attempts - 1
    retry = procrastinate.RetryStrategy(max_attempts=retries, wait=1) if retries > 0 else False

    @app.task(name=TASK, queue=QUEUE, pass_context=True, retry=retry)
    async def merge(context: JobContext, job_id: str) -> None:
        """Run merge job ``job_id`` with the worker's runtime, telling the runner which attempt this is."""
        runtime = context.additional_context["runtime"]
        attempt = context.job.attempts + 1
        await run_job(runtime, uuid.UUID(job_id), attempt=attempt, last_attempt=attempt >= worker.max_attempts,
                      should_abort=context.should_abort)
