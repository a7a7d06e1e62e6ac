"""Liveness and readiness probes, for load balancers and orchestrators.

- ``GET /livez``: the process serves requests (touches nothing else). A failing liveness probe means
  "restart me".
- ``GET /readyz``: this process can do its work now: the database answers and is at the newest
  migration this version ships, and the blob storage answers. 503 otherwise, with every check and
  what failed, so a load balancer sends traffic elsewhere until it passes again. Each check is bounded
  by ``probe_timeout_s``.

``GET /api/v1/health`` (in :mod:`registry_service.app`) stays as it always was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from litestar import Response, get
from litestar.datastructures import State

from .db.session import current_revision, head_revision


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


async def _check(work: Awaitable[dict[str, Any]], timeout: float) -> dict[str, Any]:
    try:
        return {"ok": True, **await asyncio.wait_for(work, timeout)}
    except Exception as exc:
        return {"ok": False, "error": _reason(exc)}


async def _database(state: State) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        current = await current_revision(conn)
    expected = head_revision()
    if current != expected:
        raise RuntimeError(f"the database is at migration {current}, this version needs {expected} "
                           "(run `adapter-registry migrate`)")
    return {"migration": current}


async def _storage(state: State) -> dict[str, Any]:
    await state.store.ping()
    return {"backend": type(state.store).__name__}


@get("/livez", tags=["service"], include_in_schema=False)
async def livez() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@get("/readyz", tags=["service"], include_in_schema=False)
async def readyz(state: State) -> Response[dict[str, Any]]:
    """Ready when the database is reachable and migrated to the newest revision, and storage answers."""
    timeout = state.settings.probe_timeout_s
    database, storage = await asyncio.gather(_check(_database(state), timeout), _check(_storage(state), timeout))
    ready = database["ok"] and storage["ok"]
    body = {"status": "ready" if ready else "unavailable", "checks": {"database": database, "storage": storage}}
    return Response(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})


__all__ = ["livez", "readyz"]
