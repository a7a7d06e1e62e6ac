"""Alembic environment: runs migrations with a synchronous psycopg engine. The service passes the
database URL in; run by hand (``alembic -c registry_service/migrations/alembic.ini …``) it comes from
``ADAPTER_REGISTRY_DATABASE_URL``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from registry_service.db.models import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    """The URL the caller set, else the service's configured database (psycopg flavour)."""
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from registry_service.db.session import sync_url
    from registry_service.settings import Settings

    configured = Settings.from_env().database_url
    if not configured:
        raise SystemExit("set ADAPTER_REGISTRY_DATABASE_URL (the embedded database is migrated by the service)")
    return sync_url(configured)


def run_migrations_offline() -> None:
    """Emit SQL without a database connection."""
    context.configure(url=database_url(), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply migrations over a connection; an advisory lock keeps concurrent starters in line."""
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT pg_advisory_lock(727274)")
        try:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.exec_driver_sql("SELECT pg_advisory_unlock(727274)")
            connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
