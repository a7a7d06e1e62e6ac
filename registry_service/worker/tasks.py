"""The merge task as procrastinate runs it: a thin shell around
:func:`registry_service.domain.merge_jobs.execute.run_job` that logs each run with the job's id and
records its duration and outcome (:mod:`registry_service.worker.metrics`)."""

from __future__ import annotations

import logging
import time
import uuid

import procrastinate
from procrastinate.job_context import JobContext

from ..domain.merge_jobs.execute import run_job
from ..domain.merge_jobs.queue import QUEUE, TASK
from ..domain.merge_jobs.service import FINAL, job_state
from ..settings import WorkerSettings
from .metrics import JOB_SECONDS, JOBS_RUNNING

log = logging.getLogger("adapter_registry.worker")


def register_tasks(app: procrastinate.App, worker: WorkerSettings) -> None:
    """Add the merge task to ``app``. Unexpected errors are retried by the queue up to
    ``worker.max_attempts`` runs in all; the runner knows which run is the last one."""
    retries = worker.max_attempts - 1
    retry = procrastinate.RetryStrategy(max_attempts=retries, wait=1) if retries > 0 else False

    @app.task(name=TASK, queue=QUEUE, pass_context=True, retry=retry)
    async def merge(context: JobContext, job_id: str) -> None:
        """Run merge job ``job_id`` with the worker's runtime, telling the runner which attempt this is."""
        runtime = context.additional_context["runtime"]
        job = context.job
        attempt = job.attempts + 1
        ids = {"job_id": job_id, "queue_job_id": job.id, "attempt": attempt}
        before = await job_state(runtime.sessionmaker, job_id)
        log.info("merge job %s: attempt %d starts (queue job %s, state %s)", job_id, attempt, job.id, before,
                 extra=ids)
        started, outcome = time.monotonic(), "retried"
        JOBS_RUNNING.inc()
        try:
            await run_job(runtime, uuid.UUID(job_id), attempt=attempt, last_attempt=attempt >= worker.max_attempts,
                          should_abort=context.should_abort)
            after = await job_state(runtime.sessionmaker, job_id)
            outcome = "skipped" if before in FINAL or after not in FINAL else str(after)
        finally:  # an error or the worker stopping leaves "retried": the queue runs the job again
            JOBS_RUNNING.dec()
            seconds = time.monotonic() - started
            JOB_SECONDS.labels(outcome).observe(seconds)
            log.info("merge job %s: attempt %d %s after %.2fs", job_id, attempt, outcome, seconds,
                     extra={**ids, "outcome": outcome, "seconds": round(seconds, 3)})
