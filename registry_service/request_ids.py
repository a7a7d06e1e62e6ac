"""Request ids: one per HTTP request, in the ``X-Request-ID`` response header, in the log records
written while the request is handled, and in the body of every 5xx problem detail.

A sane incoming ``X-Request-ID`` (a proxy's, or the client's) is kept: at most
:data:`MAX_REQUEST_ID_LENGTH` characters among letters, digits and ``. _ : + / = -``. Anything else
is ignored and a fresh id (32 hex digits) is made, so a header cannot smuggle text into the logs.

The public surface:

- :class:`RequestIdMiddleware` wraps the whole ASGI app (``create_app`` installs it outermost, so
  even a 404 of an unknown path carries the header);
- :func:`current_request_id` says the id of the request being handled (``None`` outside one);
- :class:`RequestIdFilter` gives log records a ``request_id`` attribute (``"-"`` outside a
  request), for formats such as :data:`LOG_FORMAT`; :mod:`registry_service.logs` puts it on every
  log handler (text or JSON lines).
"""

from __future__ import annotations

import logging
import re
import secrets
from contextvars import ContextVar

from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
MAX_REQUEST_ID_LENGTH = 128
_SAFE = re.compile(rf"[A-Za-z0-9._:+/=-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
_HEADER = REQUEST_ID_HEADER.lower().encode()
_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled in this context; ``None`` outside a request."""
    return _current.get()


def sane_request_id(value: str | bytes | None) -> str | None:
    """``value`` if it may serve as a request id (bounded length, safe characters), else ``None``."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if value is not None and _SAFE.fullmatch(value) else None


def new_request_id() -> str:
    """A fresh request id: 32 random hex digits."""
    return secrets.token_hex(16)


class RequestIdMiddleware:
    """ASGI middleware: picks the request's id, makes it current while the request is handled, and
    sets ``X-Request-ID`` on the response (replacing any the app set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope.get("headers", ()) if k == _HEADER), None)
        request_id = sane_request_id(incoming) or new_request_id()
        token = _current.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER]
                headers.append((_HEADER, request_id.encode()))
                message = {**message, "headers": headers}  # type: ignore[typeddict-item]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record it sees (the current request's, or ``"-"``); never drops one.

    A record that has one already (passed with ``extra={"request_id": ...}``) keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        return True


__all__ = ["LOG_FORMAT", "MAX_REQUEST_ID_LENGTH", "REQUEST_ID_HEADER", "RequestIdFilter", "RequestIdMiddleware",
           "current_request_id", "new_request_id", "sane_request_id"]
