"""The ceiling of ``bench_metadata.py``: a bare Litestar app whose one handler runs ``SELECT 1`` through
a SQLAlchemy ``AsyncSession`` on asyncpg (the stack the registry stands on, with nothing of its own).

Run: ``BENCH_DATABASE_URL=postgresql+asyncpg://… uvicorn metadata_ceiling:create_app --factory --app-dir bench``
"""

from __future__ import annotations

import os

from litestar import Litestar, get
from litestar.datastructures import State
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine


@get("/select1")
async def select1(state: State) -> dict[str, int]:
    """One ``SELECT 1`` in a session of its own."""
    async with state.sessionmaker() as db:
        value = (await db.execute(text("SELECT 1"))).scalar_one()
    return {"value": value}


def create_app() -> Litestar:
    """The app, on the database ``$BENCH_DATABASE_URL``."""
    engine = create_async_engine(os.environ["BENCH_DATABASE_URL"], pool_size=10, max_overflow=20)
    return Litestar([select1], state=State({"sessionmaker": async_sessionmaker(engine, expire_on_commit=False)}))
