"""The workers' housekeeping tasks, beside merges: the periodic blob collection
(:func:`registry_service.domain.gc.collect`, on ``WorkerSettings.gc_cron``; procrastinate's periodic
deferrer makes sure one worker runs each tick) and webhook deliveries
(:func:`registry_service.domain.webhooks.deliver.deliver`, retried with exponential backoff)."""

from __future__ import annotations

import logging

import procrastinate
from procrastinate import jobs as pjobs
from procrastinate.job_context import JobContext

from ..domain.gc import collect
from ..domain.webhooks.deliver import DeliveryFailed, deliver
from ..domain.webhooks.fanout import QUEUE as WEBHOOK_QUEUE
from ..domain.webhooks.fanout import TASK as WEBHOOK_TASK
from ..settings import WorkerSettings
from .metrics import GC_REMOVED, GC_REMOVED_BY_KIND, WEBHOOK_DELIVERIES

log = logging.getLogger("adapter_registry.worker")
GC_QUEUE = "housekeeping"
GC_TASK = "registry.gc"
QUEUES = [WEBHOOK_QUEUE, GC_QUEUE]


def register_housekeeping(app: procrastinate.App, worker: WorkerSettings) -> None:
    """Add the blob collection (periodic) and the webhook delivery task to ``app``."""

    @app.periodic(cron=worker.gc_cron, periodic_id="gc")
    @app.task(name=GC_TASK, queue=GC_QUEUE, pass_context=True, queueing_lock="gc")
    async def gc(context: JobContext, timestamp: int) -> None:
        """One blob collection run; what it removed goes to the log and the metrics."""
        runtime = context.additional_context["runtime"]
        report = await collect(runtime.sessionmaker, runtime.store, runtime.settings)
        for kind, count in report.counts().items():
            GC_REMOVED_BY_KIND.labels(kind).inc(count)
        GC_REMOVED.inc(len(report.blobs))

    retry = procrastinate.RetryStrategy(max_attempts=worker.webhook_max_attempts - 1,
                                        exponential_wait=worker.webhook_backoff_s,
                                        retry_exceptions=[DeliveryFailed]) if worker.webhook_max_attempts > 1 else False

    @app.task(name=WEBHOOK_TASK, queue=WEBHOOK_QUEUE, pass_context=True, retry=retry)
    async def webhook(context: JobContext, delivery_id: int) -> None:
        """Try one webhook delivery; a failure raises, and the queue tries again later."""
        runtime = context.additional_context["runtime"]
        attempt = context.job.attempts + 1
        try:
            state = await deliver(runtime.sessionmaker, runtime.settings, delivery_id,
                                  last_attempt=attempt >= worker.webhook_max_attempts)
        except DeliveryFailed:
            WEBHOOK_DELIVERIES.labels("retried").inc()
            raise
        WEBHOOK_DELIVERIES.labels(state).inc()


async def sweep_housekeeping(app: procrastinate.App, stall_timeout_s: float) -> int:
    """Put the webhook deliveries of dead workers back in the queue (a delivery is safe to send twice:
    receivers tell deliveries apart by ``X-Adapter-Hub-Delivery``) and drop their collection runs (the
    next tick runs again)."""
    handled = 0
    for task, retry in ((WEBHOOK_TASK, True), (GC_TASK, False)):
        for job in await app.job_manager.get_stalled_jobs(task_name=task, seconds_since_heartbeat=stall_timeout_s):
            try:
                if retry:
                    await app.job_manager.retry_job(job)
                else:
                    await app.job_manager.finish_job(job, status=pjobs.Status.FAILED, delete_job=False)
            except Exception:  # another worker got there first
                log.debug("stalled job %s was handled elsewhere", job.id, exc_info=True)
                continue
            handled += 1
            log.warning("%s job %s of a dead worker: %s", task, job.id, "retried" if retry else "dropped")
    return handled


__all__ = ["GC_QUEUE", "GC_TASK", "QUEUES", "register_housekeeping", "sweep_housekeeping"]
