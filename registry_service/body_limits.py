"""How much of a request body a route reads, and how many large bodies a process takes at once.

Every route reads at most ``Settings.max_body_bytes`` (the app-wide limit). A route that takes
more says so with two things: ``request_max_body_size=None`` on its handler (Litestar's own limit
off) and a :func:`body_limit` guard listed after its authentication guard, which answers 413 at
once when ``Content-Length`` is over the route's limit and counts the bytes as they arrive when it
is absent (a chunked body). Such a route also holds an :func:`upload_slot` while it reads, so one
process receives at most ``Settings.max_concurrent_uploads`` large bodies at a time; a route whose
body Litestar parses before the handler runs holds it through :func:`slot_while_parsed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Guard, Message, Receive, Scope, Send

from .errors import ServiceError, TooLarge
from .settings import Settings

#: ``app.state`` key of the process's upload slots.
SLOTS_STATE = "upload_slots"
#: Seconds a client is asked to wait when every upload slot is taken.
RETRY_AFTER_S = 5
#: A body of at most this many bytes (declared) needs no upload slot (:func:`slot_while_parsed`).
SMALL_BODY_BYTES = 2**20


class Busy(ServiceError):
    """Every upload slot of this process is taken: try again shortly."""

    status, title, kind = 503, "Busy", "busy"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": str(RETRY_AFTER_S)})


def too_large(size: int, limit: int, what: str, advice: str = "") -> TooLarge:
    """413 naming the size, the limit and what to do instead."""
    return TooLarge(f"{what} is {size} bytes; the limit is {limit}{advice}", extra={"limit": limit})


def check_length(connection: ASGIConnection[Any, Any, Any, Any], limit: int, what: str, advice: str = "") -> None:
    """413 now when the declared ``Content-Length`` is over ``limit``; else count the bytes as they
    arrive and raise 413 as soon as they pass it (for bodies sent without a length)."""
    declared = connection.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit, what, advice)
    receive = connection.receive
    seen = 0

    async def counting_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(seen, limit, what, advice)
        return message

    connection.receive = counting_receive  # type: ignore[method-assign]


def body_limit(limit: Callable[[Settings], int], what: str, advice: str = "") -> Guard:
    """A guard bounding the request body by ``limit(settings)`` bytes (see the module docstring)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        check_length(connection, limit(connection.app.state.settings), what, advice)

    return guard


@asynccontextmanager
async def upload_slot(connection: ASGIConnection[Any, Any, Any, Any]) -> AsyncIterator[None]:
    """Hold one of the process's ``max_concurrent_uploads`` slots; 503 with ``Retry-After`` when none is free."""
    state = connection.app.state
    slots: asyncio.Semaphore | None = state.get(SLOTS_STATE)
    if slots is None:
        slots = state[SLOTS_STATE] = asyncio.Semaphore(max(1, state.settings.max_concurrent_uploads))
    if slots.locked():
        raise Busy(f"this server is receiving {state.settings.max_concurrent_uploads} uploads already "
                   f"(max_concurrent_uploads); retry in {RETRY_AFTER_S} s")
    await slots.acquire()
    try:
        yield
    finally:
        slots.release()


def _may_be_large(scope: Scope) -> bool:
    """True unless the request declares a ``Content-Length`` of at most :data:`SMALL_BODY_BYTES`."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return not (value.strip().isdigit() and int(value) <= SMALL_BODY_BYTES)
    return True


def slot_while_parsed(app: ASGIApp) -> ASGIApp:
    """Route middleware for a handler whose body Litestar parses before the handler runs (a ``data``
    parameter): a body that may be large holds an :func:`upload_slot` for the whole request."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _may_be_large(scope):
            async with upload_slot(ASGIConnection(scope, receive, send)):
                await app(scope, receive, send)
        else:
            await app(scope, receive, send)

    return handle


__all__ = ["Busy", "body_limit", "check_length", "slot_while_parsed", "too_large", "upload_slot"]
