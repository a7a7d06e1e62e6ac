"""What a request gets when something fails that is not the client's fault.

- PostgreSQL unreachable (down, restarting, refusing connections, a connection lost mid-request,
  the pool exhausted): **503** with ``Retry-After``. The pool checks connections before use, so
  the service recovers by itself when the database is back.
- Blob storage unreachable (connection refused or reset, timeouts, S3 ``SlowDown``/503): **503** with
  ``Retry-After``; storage that answers with another error: **502**.
- Anything else unexpected is a bug: it is logged at ERROR with its traceback and the request id,
  and answered with a bare 500 that names the request id and nothing internal.

Every 5xx problem detail carries ``request_id`` (see :mod:`registry_service.request_ids`).
:func:`outage_problem` says which outage an exception is; :func:`problem_for` logs an exception that
has no handler of its own and says what answers it, which :func:`handle_unexpected` (the app's
handler), the web UI's error pages and the Hub-compatible routes each render in their own format.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.plugins.problem_details import ProblemDetailsException
from sqlalchemy import exc as sa_exc

from .db.session import DatabaseUnreachable
from .errors import BadGateway, InternalError, ServiceError, ServiceUnavailable
from .request_ids import current_request_id
from .storage import BlobNotFoundError, InvalidRangeError, StorageError, UploadError

log = logging.getLogger("adapter_registry.errors")

DATABASE_DOWN = "the database is unreachable right now; try again shortly"
STORAGE_DOWN = "blob storage is unreachable right now; try again shortly"
#: SQLSTATEs of a lost or refused connection: class 08, admin/crash shutdown, cannot connect now, too many.
_DISCONNECT_STATES = ("08", "57P01", "57P02", "57P03", "53300")
_RAW_DATABASE_ERRORS = (DatabaseUnreachable, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                        asyncpg.AdminShutdownError, asyncpg.TooManyConnectionsError)
#: Storage errors about the request (a missing blob, a bad range or part), answered by their own handlers.
_CLIENT_STORAGE_ERRORS = (BlobNotFoundError, InvalidRangeError, UploadError)
#: S3 error codes that mean "busy or down, try again" rather than "wrong".
_S3_RETRY_CODES = frozenset({"SlowDown", "ServiceUnavailable", "503"})


def _database_outage(exc: BaseException) -> bool:
    if isinstance(exc, _RAW_DATABASE_ERRORS):
        return True
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        state = str(getattr(exc.orig, "sqlstate", None) or "")
        return state.startswith(_DISCONNECT_STATES)
    return False


def _storage_problem(exc: BaseException) -> ServiceError | None:
    if isinstance(exc, BotoCoreError):  # endpoint unreachable, connection closed, timeouts, no credentials
        return ServiceUnavailable(STORAGE_DOWN)
    if isinstance(exc, ClientError):
        error: dict[str, Any] = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code", ""))
        if status == 503 or code in _S3_RETRY_CODES:
            return ServiceUnavailable(f"blob storage is busy or unavailable ({code or status}); try again shortly")
        return BadGateway(f"blob storage answered with an error ({code or status})")
    return None


def outage_problem(exc: BaseException) -> ServiceError | None:
    """The 503/502 problem for an outage of the database or of blob storage; ``None`` for anything else.

    A storage error the store wrapped (:class:`~registry_service.storage.StorageError`) is judged by
    its cause; without a known cause it is a 502."""
    if _database_outage(exc):
        return ServiceUnavailable(DATABASE_DOWN)
    problem = _storage_problem(exc)
    if problem is None and isinstance(exc, StorageError) and not isinstance(exc, _CLIENT_STORAGE_ERRORS):
        cause = exc.__cause__
        problem = (_storage_problem(cause) if cause is not None else None) or BadGateway(
            "blob storage failed to handle a request")
    return problem


def problem_for(request: Request, exc: Exception) -> ServiceError:
    """The problem that answers an exception without a handler of its own, logged: an outage is its
    503/502 (at WARNING, one line); anything else is a bug, a 500 (at ERROR, with its traceback). Both
    log records carry the request id."""
    request_id = current_request_id() or "-"
    problem = outage_problem(exc)
    if problem is not None:
        first_line = (str(exc).splitlines() or [""])[0][:200]  # not the SQL and its parameters
        log.warning("%s %s: %s (%s: %s)", request.method, request.url.path, problem.detail, type(exc).__name__,
                    first_line, extra={"request_id": request_id})
        return problem
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc,
              extra={"request_id": request_id})
    return InternalError()


def handle_unexpected(request: Request, exc: Exception) -> Response:
    """The app's handler for every exception without a handler of its own: :func:`problem_for` as a
    problem detail (which names the request id)."""
    return problem_for(request, exc).to_response(request)


def http_problem(exc: HTTPException) -> ProblemDetailsException:
    """Litestar's own HTTP errors as problem details (title: their detail). A 5xx one is a bug: it is
    logged with its traceback, and its answer says only that, with the request id."""
    if exc.status_code < 500:
        return ProblemDetailsException(status_code=exc.status_code, title=exc.detail, extra=exc.extra,
                                       headers=exc.headers)
    request_id = current_request_id()
    log.error("unexpected HTTP %d", exc.status_code, exc_info=exc, extra={"request_id": request_id or "-"})
    problem = InternalError()
    problem.status_code = exc.status_code
    return problem


__all__ = ["DATABASE_DOWN", "STORAGE_DOWN", "handle_unexpected", "http_problem", "outage_problem", "problem_for"]
