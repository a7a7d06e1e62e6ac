"""Error pages: HTML for people browsing, problem details (unchanged) for API clients.

The app's exception handlers (problem details, from the problem-details plugin) are wrapped: a
request for a page of the UI, or any request outside ``/api/`` whose ``Accept`` asks for HTML,
gets an error page; everything else gets exactly what it got before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Template
from litestar.status_codes import HTTP_404_NOT_FOUND, HTTP_500_INTERNAL_SERVER_ERROR

from ..failures import problem_for
from ..request_ids import current_request_id
from .headers import PAGE_HEADERS
from .session import COOKIE

log = logging.getLogger("adapter_registry.web")

#: Path prefixes served by the UI (``/`` itself too).
PAGE_PREFIXES = ("/adapters", "/base-models", "/jobs", "/sign-in", "/sign-out", "/static")
API_PREFIXES = ("/api/", "/schema")

Handler = Callable[[Request, Any], Response]


def is_page_request(request: Request) -> bool:
    """Whether an error on this request should be an HTML page."""
    path = request.url.path
    if path == "/" or any(path == p or path.startswith(p + "/") for p in PAGE_PREFIXES):
        return True
    if any(path.startswith(p) for p in API_PREFIXES):
        return False
    return "text/html" in (request.headers.get("accept") or "")


def error_page(request: Request, status: int, title: str, detail: str,
               headers: Mapping[str, str] | None = None) -> Template:
    """The error page (a 5xx one names the request id, to find it in the service log)."""
    if status >= HTTP_500_INTERNAL_SERVER_ERROR and (request_id := current_request_id()):
        detail = f"{detail} (request id {request_id})"
    return Template("error.html", status_code=status, media_type=MediaType.HTML,
                    headers={**PAGE_HEADERS, **(headers or {})},
                    context={"status": status, "title": title, "detail": detail, "path": request.url.path,
                             "viewer": None, "has_session": COOKIE in request.cookies})


def page_for(request: Request, exc: Exception) -> Template:
    """The error page for ``exc``: its status and message; internal errors say nothing about internals,
    and an outage of the database or storage is its 503/502 (with ``Retry-After``)."""
    if not isinstance(exc, HTTPException):
        exc = problem_for(request, exc)
        if exc.status_code == HTTP_500_INTERNAL_SERVER_ERROR:
            return error_page(request, HTTP_500_INTERNAL_SERVER_ERROR, "Something went wrong",
                              "The registry could not show this page. Try again; if it keeps failing, the "
                              "service log has the details.")
    status = exc.status_code
    title = getattr(exc, "title", None) or ("Not found" if status == HTTP_404_NOT_FOUND else "Error")
    detail = str(exc.detail or "")
    if status == HTTP_404_NOT_FOUND and detail.lower() in ("", "not found"):
        detail = f"There is no page at {request.url.path}."
    if status >= HTTP_500_INTERNAL_SERVER_ERROR:
        detail = "The registry could not show this page. Try again later."
    return error_page(request, status, title, detail, exc.headers)


def browser_aware(original: Handler | None) -> Handler:
    """``original`` for API clients, :func:`page_for` for browsers."""

    def handle(request: Request, exc: Any) -> Response:
        if is_page_request(request):
            return page_for(request, exc)
        if original is None:
            from litestar.exceptions.responses import create_exception_response

            return create_exception_response(request, exc)
        return original(request, exc)

    return handle


def wrap_handlers(handlers: Mapping[Any, Handler]) -> dict[Any, Handler]:
    """Every handler made browser-aware; HTTP errors without a handler (404 of unknown paths) included."""
    out: dict[Any, Handler] = {key: browser_aware(h) for key, h in handlers.items()}
    out.setdefault(HTTPException, browser_aware(None))
    return out


def page_crash(request: Request, exc: Exception) -> Response:
    """Handler for unexpected errors inside UI pages: an HTML 500 page."""
    return page_for(request, exc)
