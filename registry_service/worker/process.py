"""The merge worker process: procrastinate's worker on the registry database, plus a sweeper that
gives the jobs of dead workers (killed, lost their machine) to live ones, and a second procrastinate
worker for housekeeping (webhook deliveries, the periodic blob collection: :mod:`.housekeeping`).

Any number of workers, on any number of machines, share the queue. Each sends a heartbeat; a worker
silent for ``stall_timeout_s`` is dead, and every worker looks for such jobs every
``stall_check_s`` (procrastinate's ``get_stalled_jobs``) and puts them back in the queue
(``retry_job``, which only one of them can do for a given job). A job whose workers died
``max_attempts`` times fails instead of looping.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import procrastinate
from procrastinate import jobs as pjobs

from ..domain.merge_jobs.execute import Runtime, open_runtime
from ..domain.merge_jobs.queue import QUEUE, TASK, psycopg_conninfo
from ..domain.merge_jobs.service import mark_stalled
from ..settings import Settings, WorkerSettings
from .housekeeping import QUEUES as HOUSEKEEPING_QUEUES
from .housekeeping import register_housekeeping, sweep_housekeeping
from .tasks import register_tasks

log = logging.getLogger("adapter_registry.worker")
#: Webhook deliveries and collection runs one worker process runs at once.
HOUSEKEEPING_CONCURRENCY = 4


def make_queue_app(url: str, worker: WorkerSettings) -> procrastinate.App:
    """A procrastinate app on the database at ``url`` with the merge task registered."""
    connector = procrastinate.PsycopgConnector(conninfo=psycopg_conninfo(url))
    app = procrastinate.App(connector=connector)
    register_tasks(app, worker)
    register_housekeeping(app, worker)
    return app


async def sweep_stalled(app: procrastinate.App, runtime: Runtime) -> int:
    """Retry (or fail, past ``max_attempts``) the running jobs of workers without a recent heartbeat."""
    worker = runtime.worker
    stalled = await app.job_manager.get_stalled_jobs(queue=QUEUE, task_name=TASK,
                                                     seconds_since_heartbeat=worker.stall_timeout_s)
    handled = 0
    for job in stalled:
        runs = job.attempts + 1
        job_id = job.task_kwargs.get("job_id")
        try:
            if runs >= worker.max_attempts:
                await app.job_manager.finish_job(job, status=pjobs.Status.FAILED, delete_job=False)
                state, note = "failed", f"the worker running it stopped responding {runs} times; giving up"
            else:
                await app.job_manager.retry_job(job)
                state, note = "queued", f"the worker running attempt {runs} stopped responding; retrying"
        except Exception:  # another worker got there first
            log.debug("stalled job %s was handled elsewhere", job.id, exc_info=True)
            continue
        handled += 1
        log.warning("merge job %s (queue job %s): %s", job_id, job.id, note)
        await mark_stalled(runtime.sessionmaker, str(job_id), state=state, note=note, actor=worker.name)
    return handled


async def _sweeper(app: procrastinate.App, runtime: Runtime) -> None:
    """:func:`sweep_stalled` every ``stall_check_s`` until cancelled."""
    while True:
        try:
            await sweep_stalled(app, runtime)
            await sweep_housekeeping(app, runtime.worker.stall_timeout_s)
        except Exception:
            log.warning("looking for stalled jobs failed", exc_info=True)
        await asyncio.sleep(runtime.worker.stall_check_s)


async def run_worker(database_url: str, settings: Settings, worker: WorkerSettings) -> None:
    """Run merge jobs until SIGINT/SIGTERM (running jobs finish first)."""
    async with open_runtime(database_url, settings, worker) as runtime:
        app = make_queue_app(database_url, worker)
        worker.scratch_dir.mkdir(parents=True, exist_ok=True)
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        log.info("merge worker %s started at %s (concurrency %d)", worker.name, started, worker.concurrency)
        async with app.open_async():
            sweeper = asyncio.create_task(_sweeper(app, runtime))
            common = {"update_heartbeat_interval": worker.heartbeat_s, "stalled_worker_timeout": worker.stall_timeout_s,
                      "additional_context": {"runtime": runtime}}
            # housekeeping (webhook deliveries, blob collection) has slots of its own, so it never waits behind
            # long merges; it stops when the merge worker does (which handles SIGINT/SIGTERM)
            housekeeping = asyncio.create_task(app.run_worker_async(
                queues=HOUSEKEEPING_QUEUES, name=f"{worker.name}/housekeeping", concurrency=HOUSEKEEPING_CONCURRENCY,
                fetch_job_polling_interval=min(worker.poll_s, 1.0), install_signal_handlers=False, **common))
            try:
                await app.run_worker_async(queues=[QUEUE], name=worker.name, concurrency=worker.concurrency,
                                           fetch_job_polling_interval=worker.poll_s, **common)
            finally:
                for task in (housekeeping, sweeper):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):  # stopping: nothing to report
                        await task
