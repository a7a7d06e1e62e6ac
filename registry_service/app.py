"""``create_app(settings) -> Litestar``: wiring of database, storage, auth and routes."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TextIO, TypedDict

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsPlugin
from sqlalchemy import func, select, text

from sdk.errors import AdapterError, ValidationFailed

from .db.models import ApiToken
from .db.session import head_revision, make_engine, make_reader, make_sessionmaker, open_database
from .deps import provide_db, provide_principal, provide_read, provide_reader, provide_settings, provide_store
from .domain.adapters.controller import AdapterController
from .domain.adapters.uploads import UploadController
from .domain.auth.controller import TokenController
from .domain.auth.token_cache import watch_token_writes
from .domain.auth.tokens import issue_token
from .domain.base_models.controller import BaseModelController
from .domain.compositions.controller import CompositionController
from .domain.hub.commits import HubCommitController
from .domain.hub.controller import HubController
from .domain.lifecycle.routes import LIFECYCLE_ROUTES
from .domain.merge_jobs.controller import LineageController, MergeJobController
from .errors import BadRequest, NotFound, RangeNotSatisfiable, ServiceError, UploadRejected
from .failures import handle_unexpected, http_problem
from .inputs import RegistryRequest, reject_nul_parameters
from .logs import litestar_logging
from .metrics import mark_process_dead, metrics, prometheus_config
from .openapi import problems
from .probes import livez, readyz
from .request_ids import RequestIdMiddleware
from .settings import Settings
from .storage import BlobNotFoundError, BlobStore, InvalidRangeError, UploadError, make_store
from .web import WebUIPlugin

log = logging.getLogger("adapter_registry")


class Health(TypedDict):
    """The service is up, with its storage backend and database."""

    status: str
    storage: str
    database: str


async def bootstrap_admin_token(state: State, settings: Settings) -> str | None:
    """On first start (no tokens at all), create a global admin token and write it to DATA_DIR/admin-token."""
    async with state.sessionmaker() as db, db.begin():
        await db.execute(text("SELECT pg_advisory_xact_lock(727275)"))
        if (await db.execute(select(func.count()).select_from(ApiToken))).scalar_one():
            return None
        token, _ = await issue_token(db, namespace=None, scopes=["admin"], name="bootstrap-admin")
    path = settings.data_dir / "admin-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def announce_admin_token(token: str, path: Path, out: TextIO | None = None) -> None:
    """Say where the bootstrap admin token was written; show the token itself only on a terminal, so it never
    ends up in a log file or a container log."""
    out = out or sys.stdout
    if out.isatty():
        print(f"Created an admin token (saved to {path}):\n  {token}", file=out, flush=True)
    else:
        print(f"Created an admin token; it is in {path} (shown only when stdout is a terminal)", file=out, flush=True)


def create_app(settings: Settings | None = None, *, store: BlobStore | None = None) -> Litestar:
    """The registry application."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state = app.state
        url, pg = await asyncio.to_thread(open_database, settings.database_url, settings.data_dir,
                                          migrate=settings.apply_migrations)
        await asyncio.to_thread(head_revision)  # read the packaged migrations once, for /readyz
        engine = make_engine(url, settings.database_pool_size, settings.database_max_overflow)
        state.engine = engine
        # the reader keeps open what it could open before at most (half the pool and half the overflow)
        state.reader = make_reader(url, max(2, settings.database_pool_size // 2 + settings.database_max_overflow // 2))
        watch_token_writes(engine)  # this process refuses a token it revokes at once (token_cache)
        state.sessionmaker = make_sessionmaker(engine)
        state.settings = settings
        state.store = store or make_store(settings)
        ensure = getattr(state.store, "ensure_bucket", None)
        if ensure is not None:
            await ensure()
        token = await bootstrap_admin_token(state, settings)
        if token:
            announce_admin_token(token, settings.data_dir / "admin-token")
        state.embedded_postgres = pg  # kept referenced: pgserver stops when the process exits
        try:
            yield
        finally:
            await engine.dispose()
            await state.reader.dispose()
            mark_process_dead()
            if pg is not None:  # stop the embedded PostgreSQL with the service (SIGTERM included)
                await asyncio.to_thread(pg.cleanup)

    @get("/api/v1/health", tags=["service"], responses=problems())
    async def health(state: State) -> Health:
        """Liveness and readiness: database reachable, storage backend."""
        async with state.sessionmaker() as db:
            await db.execute(text("SELECT 1"))
        return {"status": "ok", "storage": type(state.store).__name__, "database": "ok"}

    problem_map = {
        ValidationFailed: lambda exc: UploadRejected(exc.problems),
        AdapterError: lambda exc: UploadRejected([], detail=str(exc)),
        BlobNotFoundError: lambda exc: NotFound(f"stored bytes are missing: {exc}"),
        InvalidRangeError: lambda exc: RangeNotSatisfiable(str(exc)),
        UploadError: lambda exc: BadRequest(str(exc)),
        HTTPException: http_problem,
    }
    observability = [metrics] if settings.metrics else []
    app = Litestar(
        route_handlers=[health, livez, readyz, *observability, BaseModelController, AdapterController,
                        TokenController, UploadController, MergeJobController, LineageController, HubController,
                        HubCommitController, CompositionController, *LIFECYCLE_ROUTES],
        dependencies={
            "db": Provide(provide_db),
            "principal": Provide(provide_principal),
            "read": Provide(provide_read),
            "reader": Provide(provide_reader, sync_to_thread=False),
            "store": Provide(provide_store, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        lifespan=[lifespan],
        middleware=[prometheus_config().middleware] if settings.metrics else [],
        request_class=RegistryRequest,
        before_request=reject_nul_parameters,
        plugins=[ProblemDetailsPlugin(ProblemDetailsConfig(enable_for_all_http_exceptions=True,
                                                           exception_to_problem_detail_map=problem_map)),
                 WebUIPlugin(settings)],  # after problem details: it makes their errors HTML pages for browsers
        # outages (database, storage) become 503/502; anything else unexpected is logged and a 500
        exception_handlers={Exception: handle_unexpected},
        logging_config=litestar_logging(settings.log_level, settings.log_format),  # request ids in every line
        openapi_config=OpenAPIConfig(title="Adapter registry", version="1", path="/schema"),
        request_max_body_size=settings.max_body_bytes,  # routes that take more say so (see body_limits)
        debug=settings.debug,
    )
    # outermost, so that every response (a 404 of the router too) carries X-Request-ID
    app.asgi_handler = RequestIdMiddleware(app.asgi_handler)
    return app


__all__ = ["ServiceError", "create_app"]
