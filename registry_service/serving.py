"""Running the API: ``adapter-registry serve`` on uvicorn, with one process or many.

With one process, the app does everything itself. With ``workers > 1`` the serving process prepares
what all API processes share, then hands over to uvicorn:

- the embedded PostgreSQL (when no database is configured) is started here, once, and every API
  process gets its URL; it stops when this process exits;
- migrations are applied here, once, before any API process starts;
- uvicorn's supervisor binds the socket and spawns the processes (and replaces any that dies); their
  metrics meet in a multi-process directory (see :mod:`registry_service.metrics`).

Each of those processes builds its app from the environment (:func:`app_from_env`): the effective
settings are written into it first, so command-line options reach the processes uvicorn spawns.

HTTP is parsed by httptools (C) where it is installed (the ``server`` extra installs it, and uvloop,
which uvicorn then runs the event loop on); h11 (pure Python) is the fallback. Accepted connections
get TCP_NODELAY explicitly (:func:`http_protocol`): uvicorn's
multi-process mode hands the workers a socket it bound itself, and in uvicorn releases without the
fix for its issue #3149 that socket's protocol field is 0, which makes asyncio skip TCP_NODELAY, so
small responses wait on the client's delayed ACK.

SIGTERM or SIGINT stops gracefully: the listening socket closes, requests in flight get up to
``graceful_shutdown_s`` seconds to finish, then each process shuts its app down (database pool,
metrics files) and the embedded PostgreSQL stops last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import socket
import tempfile
from typing import Any

from litestar import Litestar
from uvicorn.protocols.http.h11_impl import H11Protocol

from .logs import log_config
from .settings import ENV, Settings


def set_nodelay(transport: Any) -> None:
    """Turn off Nagle's algorithm on a TCP connection (small responses leave at once)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelay:
    """Mixin for a uvicorn HTTP protocol: TCP_NODELAY set on every accepted connection."""

    def connection_made(self, transport: Any) -> None:
        set_nodelay(transport)
        super().connection_made(transport)  # type: ignore[misc]


class NoDelayH11Protocol(NoDelay, H11Protocol):
    """uvicorn's h11 protocol, with TCP_NODELAY set on every accepted connection."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools missing: h11 serves
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

if HttpToolsProtocol is not None:
    class NoDelayHttpToolsProtocol(NoDelay, HttpToolsProtocol):
        """uvicorn's httptools protocol, with TCP_NODELAY set on every accepted connection."""


def http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol when httptools is installed, else its h11 one; either with
    TCP_NODELAY set on every accepted connection (module-level classes: uvicorn's worker processes
    receive them pickled)."""
    return NoDelayH11Protocol if HttpToolsProtocol is None else NoDelayHttpToolsProtocol


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive (the app, torch, SQLAlchemy's metadata, …) into the
    garbage collector's permanent generation (:func:`gc.freeze`): they live as long as the process, and
    each full collection used to walk them all again — a twelfth of a metadata read's CPU, in pauses of
    a few hundred milliseconds. Only objects made after start-up are collected from then on."""
    gc.collect()
    gc.freeze()


def served_app(settings: Settings) -> Litestar:
    """The app as ``serve`` runs it: :func:`registry_service.app.create_app`, with the heap frozen once it
    has started (:func:`freeze_startup_heap`)."""
    from .app import create_app

    app = create_app(settings)
    app.on_startup.append(freeze_startup_heap)
    return app


def app_from_env() -> Litestar:
    """The app of one API process, configured from the environment (uvicorn's factory)."""
    return served_app(Settings.from_env())


def prepare_database(settings: Settings) -> tuple[dict[str, str], Any]:
    """Start the embedded PostgreSQL if no database is configured, and apply migrations (when the
    settings say so); returns the environment the API processes need and the embedded server's
    handle (keep it referenced until the processes are gone)."""
    from .db.session import open_database

    env = settings.to_env()
    url, server = open_database(settings.database_url, settings.data_dir, migrate=settings.apply_migrations)
    env[ENV + "DATABASE_URL"] = url
    env[ENV + "APPLY_MIGRATIONS"] = "false"  # done once, here
    return env, server


def run_server(settings: Settings) -> None:
    """Serve the API with ``settings.workers`` processes until SIGTERM/SIGINT."""
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "http": http_protocol(),
        "log_config": log_config(settings.log_level, settings.log_format),
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "forwarded_allow_ips": settings.forwarded_allow_ips, "server_header": False,
    }
    if settings.workers == 1:
        # One process: the app itself starts (and stops) the embedded PostgreSQL and migrates. uvicorn
        # re-raises SIGTERM after its graceful shutdown, so nothing may wait for uvicorn.run to return.
        uvicorn.run(served_app(settings), **options)
        return
    from .metrics import MULTIPROC_ENV  # the supervisor itself imports neither the app nor torch

    env, server = prepare_database(settings)
    metrics_dir = tempfile.mkdtemp(prefix="adapter-registry-metrics-")
    env[MULTIPROC_ENV] = metrics_dir
    os.environ.update(env)
    try:
        uvicorn.run("registry_service.serving:app_from_env", factory=True, workers=settings.workers, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        cleanup = getattr(server, "cleanup", None)
        if cleanup is not None:  # the embedded PostgreSQL stops after the API processes
            cleanup()


__all__ = [
    "NoDelayH11Protocol",
    "app_from_env",
    "freeze_startup_heap",
    "http_protocol",
    "prepare_database",
    "run_server",
    "served_app",
]
