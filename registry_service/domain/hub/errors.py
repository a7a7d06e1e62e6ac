"""Errors of the Hub-compatible API, answered the way ``huggingface_hub`` reads them.

The client picks its exception from the ``X-Error-Code`` header (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``), not from the status alone: a bare 404 breaks its
``file_exists`` and a 401 without a code over plain http is not taken for "not found". So every
error of these routes carries a code, an ``X-Error-Message`` and a JSON ``{"error": ...}`` body.
"""

from __future__ import annotations

from litestar import Request, Response
from litestar.exceptions import HTTPException

from ...failures import problem_for

#: The message the client recognises as "the token itself is bad" (it then does not claim the repo is missing).
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


class HubError(Exception):
    """An error answered with ``status``, ``X-Error-Code: code`` and ``message``."""

    status = 400
    code = ""

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class RepoNotFound(HubError):
    """No such adapter, or one the caller may not see (401 when anonymous, 404 otherwise)."""

    code = "RepoNotFound"

    def __init__(self, message: str, *, anonymous: bool) -> None:
        super().__init__(message)
        self.status = 401 if anonymous else 404


class RevisionNotFound(HubError):
    """The adapter exists but the revision names no version of it."""

    status, code = 404, "RevisionNotFound"


class RevisionGone(HubError):
    """The revision names a yanked version: 410 with the reason. Coded ``RevisionNotFound`` so the
    client raises its ``RevisionNotFoundError`` (carrying the 410 and the message) rather than taking
    it for a network failure and looking in its cache."""

    status, code = 410, "RevisionNotFound"


class EntryNotFound(HubError):
    """The version exists but has no such file; ``X-Repo-Commit`` lets the client cache the absence."""

    status, code = 404, "EntryNotFound"

    def __init__(self, message: str, *, commit: str) -> None:
        super().__init__(message, headers={"X-Repo-Commit": commit})


def hub_error_response(request: Request, exc: Exception) -> Response:
    """Exception handler of the hub routes: HF-style JSON error with ``X-Error-Code``/``X-Error-Message``.
    An exception of no other kind is an outage (503/502, with ``Retry-After``) or a bug (500), logged."""
    if not isinstance(exc, HubError | HTTPException):
        exc = problem_for(request, exc)
    if isinstance(exc, HubError):
        status, code, message, extra = exc.status, exc.code, exc.message, exc.headers
    else:
        status, code, extra = exc.status_code, "", dict(exc.headers or {})
        message = exc.detail or str(exc)
    header_message = message
    if status == 401 and not code and request.headers.get("authorization"):
        # a token was sent but is unknown, revoked, expired or malformed: the client must not call that "not found"
        header_message = INVALID_CREDENTIALS
        message = f"{INVALID_CREDENTIALS}: {message}"
    headers = {**extra, "X-Error-Message": _header_safe(header_message)}
    if code:
        headers["X-Error-Code"] = code
    body = None if request.method == "HEAD" else {"error": message}
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _header_safe(text: str) -> str:
    """One line of printable ASCII (header values cannot carry newlines or arbitrary bytes)."""
    return "".join(c if 32 <= ord(c) < 127 else " " for c in text)[:500].strip()  # no edge whitespace either


__all__ = ["EntryNotFound", "HubError", "RepoNotFound", "RevisionGone", "RevisionNotFound", "hub_error_response"]
