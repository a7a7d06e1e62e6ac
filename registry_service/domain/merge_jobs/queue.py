"""The merge-job queue: procrastinate on the registry's own PostgreSQL database (its queue and task
names, and the connection string workers give it).

The API enqueues and cancels through procrastinate's versioned SQL functions
(``procrastinate_defer_jobs_v1``, ``procrastinate_cancel_job_v1``) inside its own transaction, so
a merge-job row and its queue entry are created (or cancelled) together or not at all. Workers use
procrastinate's :class:`~procrastinate.App` with the psycopg connector on the same database.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.session import async_url

QUEUE = "merges"
TASK = "registry.merge"


def psycopg_conninfo(url: str) -> str:
    """The plain ``postgresql://`` form of a database URL (what psycopg and libpq take)."""
    return "postgresql://" + async_url(url).removeprefix("postgresql+asyncpg://")


async def enqueue(db: AsyncSession, job_id: str) -> int:
    """Queue the task for merge job ``job_id`` in ``db``'s transaction; returns the queue's job id."""
    row = await db.execute(
        text("SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, 0, NULL, NULL, "
             "CAST(:args AS jsonb), NULL)::procrastinate_job_to_defer_v1]))"),
        {"queue": QUEUE, "task": TASK, "args": json.dumps({"job_id": job_id})},
    )
    return int(row.scalar_one())


async def cancel_if_waiting(db: AsyncSession, queue_job_id: int) -> bool:
    """Cancel the queue entry if no worker has taken it yet (in ``db``'s transaction); True if cancelled."""
    row = await db.execute(text("SELECT procrastinate_cancel_job_v1(:id, false, false)"), {"id": queue_job_id})
    return row.scalar_one() is not None


async def queue_status(db: AsyncSession, queue_job_id: int) -> dict[str, Any] | None:
    """The queue's view of a job (status, attempts), or None when it is gone."""
    row = (await db.execute(text("SELECT status::text AS status, attempts FROM procrastinate_jobs WHERE id = :id"),
                            {"id": queue_job_id})).mappings().first()
    return dict(row) if row else None


async def last_worker_heartbeat(db: AsyncSession) -> Any:
    """When a worker last told the queue it is alive (a timezone-aware datetime), or None when none is known."""
    return (await db.execute(text("SELECT max(last_heartbeat) FROM procrastinate_workers"))).scalar()
