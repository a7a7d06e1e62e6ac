"""Domain errors, each mapped to an RFC 9457 problem-details response by the app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Request, Response
from litestar.plugins.problem_details import ProblemDetailsException

from sdk.problems import Problem

from .request_ids import current_request_id

#: Seconds a client is asked to wait (``Retry-After``) before retrying after a 503.
RETRY_AFTER_S = 5


class ServiceError(ProblemDetailsException):
    """Base of the service's errors; ``status`` and ``title`` are set per subclass."""

    status = 500
    title = "Internal error"
    kind = "internal"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(
            detail=detail,
            status_code=self.status,
            title=self.title,
            type_=f"https://adapter-registry.dev/problems/{self.kind}",
            extra=extra,
            headers=headers,
        )

    def to_response(self, request: Request) -> Response[dict[str, Any]]:
        """The problem detail; a 5xx one also names the request (``request_id``), to find it in the logs."""
        response = super().to_response(request)
        if self.status_code >= 500 and isinstance(response.content, dict):
            response.content["request_id"] = current_request_id()
        return response


class Unauthorized(ServiceError):
    status, title, kind = 401, "Authentication required", "unauthorized"

    def __init__(self, detail: str = "this needs a bearer token: send 'Authorization: Bearer <token>'"):
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="adapter-registry"'})


class Forbidden(ServiceError):
    status, title, kind = 403, "Not allowed", "forbidden"


class NotFound(ServiceError):
    status, title, kind = 404, "Not found", "not-found"


class Conflict(ServiceError):
    status, title, kind = 409, "Conflict", "conflict"


class TooLarge(ServiceError):
    status, title, kind = 413, "Too large", "too-large"


class Gone(ServiceError):
    status, title, kind = 410, "Gone", "gone"


class QuotaExceeded(ServiceError):
    """A namespace's quota (settings ``namespace_max_*``) would be exceeded."""

    status, title, kind = 403, "Quota exceeded", "quota-exceeded"


class BadRequest(ServiceError):
    status, title, kind = 400, "Bad request", "bad-request"


class RangeNotSatisfiable(ServiceError):
    status, title, kind = 416, "Range not satisfiable", "range"


class InternalError(ServiceError):
    """An unexpected error (a bug): the log has its traceback under the response's request id."""

    status, title, kind = 500, "Internal error", "internal"

    def __init__(self, detail: str = "the registry failed to handle this request; the service log has the "
                                     "details under this request id") -> None:
        super().__init__(detail)


class ServiceUnavailable(ServiceError):
    """503: a service the registry needs (the database, blob storage) cannot be reached right now;
    ``Retry-After`` says when to try again."""

    status, title, kind = 503, "Service unavailable", "unavailable"

    def __init__(self, detail: str, *, retry_after: int = RETRY_AFTER_S) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class BadGateway(ServiceError):
    """502: blob storage answered, but with an error."""

    status, title, kind = 502, "Storage error", "storage-error"


class UploadRejected(ServiceError):
    """The upload does not fit: every problem is listed in ``problems``."""

    status, title, kind = 422, "Upload rejected", "upload-rejected"

    def __init__(self, problems: Sequence[Problem], detail: str | None = None):
        self.problems = list(problems)
        first = self.problems[0].message if self.problems else "invalid upload"
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        super().__init__(detail or first + more, extra={"problems": [p.to_dict() for p in self.problems]})


def reject(
    message: str, *, tensor: str | None = None, expected: str | None = None, found: str | None = None
) -> UploadRejected:
    """An :class:`UploadRejected` with one problem."""
    return UploadRejected([Problem(tensor, expected, found, message)])
