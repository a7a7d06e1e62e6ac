"""The ``adapter-registry`` command: serve, migrate, worker, token, gc, config.

Every command reads its settings from the environment (``ADAPTER_REGISTRY_*``, see
:mod:`registry_service.settings`); options given on the command line win. Settings that do not
validate stop the command with one line per problem (exit status 2), before anything starts.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from .settings import Settings, SettingsError, WorkerSettings, unknown_variables

app = typer.Typer(help="The adapter registry service.", no_args_is_help=True, add_completion=False)
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["text", "json"]


def _fail(exc: SettingsError) -> typer.Exit:
    typer.echo("adapter-registry: invalid settings:", err=True)
    for line in str(exc).splitlines():
        typer.echo(f"  {line}", err=True)
    return typer.Exit(2)


def _warn_unknown() -> None:
    for var in unknown_variables():
        typer.echo(f"adapter-registry: warning: no setting reads {var}", err=True)


def _settings(data_dir: Path | None = None, **options: Any) -> Settings:
    """The service settings from the environment, command-line options winning; exits 2 when invalid."""
    _warn_unknown()
    try:
        return Settings.from_env(data_dir=data_dir, **options)
    except SettingsError as exc:
        raise _fail(exc) from None


def _worker_settings(**options: Any) -> WorkerSettings:
    try:
        return WorkerSettings.from_env(**options)
    except SettingsError as exc:
        raise _fail(exc) from None


def _migrated_database(settings: Settings, *, force: bool = False) -> tuple[str, Any]:
    """The database URL (starting the embedded PostgreSQL if none is configured), migrated unless the
    settings say not to (``force``: always, as ``migrate`` does).

    Returns the embedded server's handle too: keep it referenced while the database is used."""
    from .db.session import open_database

    return open_database(settings.database_url, settings.data_dir, migrate=force or settings.apply_migrations)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="API processes sharing the port (default 1).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the embedded default.")] = None,
    log_level: Annotated[LogLevel | None, typer.Option(help="Log level (default info).")] = None,
    log_format: Annotated[LogFormat | None, typer.Option(help="text, or json: one object per line.")] = None,
) -> None:
    """Run the API (embedded PostgreSQL and local blobs unless configured otherwise).

    With --workers N, N processes share the port and the database (the embedded PostgreSQL too).
    SIGTERM/SIGINT stop gracefully: requests in flight get ADAPTER_REGISTRY_GRACEFUL_SHUTDOWN_S seconds."""
    from .serving import run_server

    settings = _settings(data_dir, host=host, port=port, workers=workers, log_level=log_level, log_format=log_format)
    where = "embedded PostgreSQL" if settings.embedded_database else "PostgreSQL at DATABASE_URL"
    blobs = f"S3 bucket {settings.s3_bucket}" if settings.uses_s3 else f"{settings.data_dir / 'blobs'}"
    url = f"http://{settings.host}:{settings.port}"
    typer.echo(f"adapter-registry: data in {settings.data_dir} ({where}; blobs in {blobs})")
    typer.echo(f"adapter-registry: serving on {url} with {settings.workers} process(es)  (API docs: {url}/schema)")
    run_server(settings)


@app.command()
def migrate(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the embedded default.")] = None,
) -> None:
    """Apply database migrations (the service also applies them when it starts)."""
    _migrated_database(_settings(data_dir), force=True)
    typer.echo("database is at the newest schema revision")


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once (default 1).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the embedded default.")] = None,
    log_level: Annotated[LogLevel | None, typer.Option(help="Log level (default info).")] = None,
    log_format: Annotated[LogFormat | None, typer.Option(help="text, or json: one object per line.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
) -> None:
    """Run merge jobs from the queue until stopped (SIGINT/SIGTERM let running jobs finish).

    Uses the same database and blob storage as ``serve`` (on the embedded default: the PostgreSQL
    and blob folder under the data directory). Start as many as you like, on any machines.
    Tuning: ADAPTER_REGISTRY_WORKER_* (see WorkerSettings in registry_service/settings.py)."""
    from .logs import configure_logging
    from .worker.metrics import serve_metrics
    from .worker.process import run_worker

    settings = _settings(data_dir, log_level=log_level, log_format=log_format)
    worker_settings = _worker_settings(concurrency=concurrency, metrics_port=metrics_port)
    configure_logging(settings.log_level, settings.log_format)
    url, _server = _migrated_database(settings)
    serve_metrics(worker_settings)
    where = "embedded PostgreSQL" if settings.embedded_database else "PostgreSQL at DATABASE_URL"
    typer.echo(f"adapter-registry worker {worker_settings.name}: {where}, concurrency {worker_settings.concurrency}")
    asyncio.run(run_worker(url, settings, worker_settings))


@app.command()
def token(
    namespace: Annotated[str | None, typer.Option(help="Namespace (omit for a global admin token).")] = None,
    scope: Annotated[list[str], typer.Option(help="read, write or admin (repeatable).")] = ["read"],  # noqa: B006
    name: Annotated[str, typer.Option(help="A label for the token.")] = "",
    expires_in: Annotated[str | None, typer.Option(
        help="Lifetime: 90d, 12h, 30m, 3600 (seconds) or 'never' (default: TOKEN_DEFAULT_TTL_S; at most "
             "TOKEN_MAX_TTL_S).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the embedded default.")] = None,
) -> None:
    """Create an API token directly in the database and print it (shown once)."""
    from sdk.durations import parse_duration

    from .db.session import make_engine, make_sessionmaker
    from .domain.auth.tokens import issue_token, token_lifetime
    from .errors import ServiceError

    settings = _settings(data_dir)
    try:
        requested = None if expires_in is None else (parse_duration(expires_in) or 0)
        lifetime = token_lifetime(requested, default_s=settings.token_default_ttl_s, max_s=settings.token_max_ttl_s)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires-in") from None
    except ServiceError as exc:
        raise typer.BadParameter(str(exc.detail), param_hint="--expires-in") from None
    url, _server = _migrated_database(settings)

    async def run() -> str:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as db, db.begin():
                token, _ = await issue_token(db, namespace=namespace, scopes=scope, name=name, expires_in=lifetime)
                return token
        finally:
            await engine.dispose()

    typer.echo(asyncio.run(run()))


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed.")] = False,
    grace_s: Annotated[int | None, typer.Option(
        help="Leave objects younger than this many seconds (default ADAPTER_REGISTRY_GC_GRACE_S).", min=0)] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the embedded default.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as one JSON object.")] = False,
) -> None:
    """Collect garbage now: blobs no version or base model references, expired and stuck upload
    sessions with their multipart uploads and staged objects (the workers also do it on
    ADAPTER_REGISTRY_WORKER_GC_CRON). Safe while the service runs."""
    from .db.session import make_engine, make_sessionmaker
    from .domain.gc import collect
    from .storage import make_store

    settings = _settings(data_dir)
    url, _server = _migrated_database(settings)

    async def run() -> Any:
        engine = make_engine(url)
        try:
            return await collect(make_sessionmaker(engine), make_store(settings), settings, dry_run=dry_run,
                                 grace_s=grace_s)
        finally:
            await engine.dispose()

    report = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    counts = report.counts()
    typer.echo(f"{verb}: {counts['blobs']} blobs ({report.blob_bytes} bytes), {counts['staged']} staged objects, "
               f"{counts['multipart']} multipart uploads; ended {counts['expired_sessions']} expired and "
               f"{counts['stuck_sessions']} stuck upload sessions")
    for key in report.blobs + report.staged + report.multipart:
        typer.echo(f"  {key}")
    for error in report.errors:
        typer.echo(f"adapter-registry gc: {error}", err=True)


@app.command()
def config(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the embedded default.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Print the effective settings (service and merge workers) with secrets masked, and exit 2 if
    any does not validate. Each line is the variable that sets it; "# default" marks values not set."""
    _warn_unknown()
    problems = []
    try:
        service = Settings.from_env(data_dir=data_dir)
    except SettingsError as exc:
        problems.append(str(exc))
    try:
        worker = WorkerSettings.from_env()
    except SettingsError as exc:
        problems.append(str(exc))
    if problems:
        raise _fail(SettingsError("\n".join(problems)))
    credentials = _credentials()
    if as_json:
        typer.echo(json.dumps({"service": service.shown(), "worker": worker.shown(), "s3_credentials": credentials},
                              indent=2, default=str))
        return
    for title, model in (("service", service), ("merge workers", worker)):
        typer.echo(f"# {title}")
        for name, value in model.shown().items():
            shown = "" if value is None else str(value).lower() if isinstance(value, bool) else value
            mark = "" if name in model.model_fields_set else "    # default"
            typer.echo(f"{model.env_name(name)}={shown}{mark}")
    typer.echo("# S3 credentials (boto3 reads them; also ~/.aws and instance roles)")
    for name, value in credentials.items():
        typer.echo(f"{name}={value or ''}")


def _credentials() -> dict[str, str | None]:
    """boto3's credential variables as they are set, masked (the key id keeps its last 4 characters)."""
    key = os.environ.get("AWS_ACCESS_KEY_ID")
    out: dict[str, str | None] = {"AWS_ACCESS_KEY_ID": f"***{key[-4:]}" if key else None}
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        out[name] = "***" if os.environ.get(name) else None
    out["AWS_PROFILE"] = os.environ.get("AWS_PROFILE")
    return out


def main() -> None:
    """Entry point of the ``adapter-registry`` script."""
    app()


if __name__ == "__main__":
    main()
