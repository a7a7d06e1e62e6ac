"""The ``adapter-registry`` command: serve, migrate, worker, token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from .settings import Settings

app = typer.Typer(help="The adapter registry service.", no_args_is_help=True, add_completion=False)


def _settings(data_dir: Path | None) -> Settings:
    return Settings.from_env(data_dir=data_dir)


def _migrated_database(settings: Settings) -> tuple[str, object]:
    """The database URL (starting the embedded PostgreSQL if none is configured), migrated.

    Returns the embedded server's handle too: keep it referenced while the database is used."""
    from .db.session import apply_migrations, start_embedded_postgres

    url, server = settings.database_url, None
    if url is None:
        url, server = start_embedded_postgres(settings.data_dir)
    apply_migrations(url)
    return url, server


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the embedded default.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the API (embedded PostgreSQL and local blobs unless configured otherwise)."""
    import uvicorn

    from .app import create_app

    settings = _settings(data_dir)
    where = "embedded PostgreSQL" if settings.embedded_database else "PostgreSQL at DATABASE_URL"
    blobs = f"S3 bucket {settings.s3_bucket}" if settings.uses_s3 else f"{settings.data_dir / 'blobs'}"
    typer.echo(f"adapter-registry: data in {settings.data_dir} ({where}; blobs in {blobs})")
    typer.echo(f"adapter-registry: serving on http://{host}:{port}  (API docs: http://{host}:{port}/schema)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


@app.command()
def migrate(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the embedded default.")] = None,
) -> None:
    """Apply database migrations (the service also applies them when it starts)."""
    _migrated_database(_settings(data_dir))
    typer.echo("database is at the newest schema revision")


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once (default 1).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the embedded default.")] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run merge jobs from the queue until stopped (SIGINT/SIGTERM let running jobs finish).

    Uses the same database and blob storage as ``serve`` (on the embedded default: the PostgreSQL
    and blob folder under the data directory). Start as many as you like, on any machines.
    Tuning: ADAPTER_REGISTRY_WORKER_* (see WorkerSettings in registry_service/settings.py)."""
    import logging

    from .settings import WorkerSettings
    from .worker.process import run_worker

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(data_dir)
    try:
        worker_settings = WorkerSettings.from_env(concurrency=concurrency)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    url, _server = _migrated_database(settings)
    where = "embedded PostgreSQL" if settings.embedded_database else "PostgreSQL at DATABASE_URL"
    typer.echo(f"adapter-registry worker {worker_settings.name}: {where}, concurrency {worker_settings.concurrency}")
    asyncio.run(run_worker(url, settings, worker_settings))


@app.command()
def token(
    namespace: Annotated[str | None, typer.Option(help="Namespace (omit for a global admin token).")] = None,
    scope: Annotated[list[str], typer.Option(help="read, write or admin (repeatable).")] = ["read"],  # noqa: B006
    name: Annotated[str, typer.Option(help="A label for the token.")] = "",
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the embedded default.")] = None,
) -> None:
    """Create an API token directly in the database and print it (shown once)."""
    from .db.session import make_engine, make_sessionmaker
    from .domain.auth.tokens import create_token

    url, _server = _migrated_database(_settings(data_dir))

    async def run() -> str:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as db, db.begin():
                return await create_token(db, namespace=namespace, scopes=scope, name=name)
        finally:
            await engine.dispose()

    typer.echo(asyncio.run(run()))


def main() -> None:
    """Entry point of the ``adapter-registry`` script."""
    app()


if __name__ == "__main__":
    main()
