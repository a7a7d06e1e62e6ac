"""What the OpenAPI schema says about errors: every error of the JSON API is an RFC 9457 problem
(``application/problem+json``), the Hub-compatible routes answer ``{"error": ...}`` as the Hub does,
and each operation lists the statuses it can answer. Handlers declare theirs with :func:`problems`
or :func:`hub_errors`; operations whose bodies the handler reads itself (multipart forms, raw parts,
ndjson commits) and file downloads describe them through the operation classes made here."""

# No ``from __future__ import annotations``: TypedDict sees NotRequired only in evaluated annotations.
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

PROBLEM_JSON = "application/problem+json"

#: Why each status happens, as the schema says it.
REASONS = {
    400: "The request is malformed: a parameter or a body field is out of its bounds or of the wrong type.",
    401: "No token, or one that is unknown, revoked or expired.",
    403: "The token does not cover this namespace or action.",
    404: "No such object, or one the caller may not see.",
    409: "The object exists already with other content.",
    412: "A precondition of the request does not hold any more.",
    413: "The body is larger than this route accepts.",
    416: "The Range header is malformed or outside the file.",
    502: "The storage answered with an error.",
    422: "The upload or request is understood but does not fit: every problem is listed.",
    503: "The database or the storage is unavailable for a moment; retry after Retry-After seconds.",
}


class ProblemItem(TypedDict):
    """One problem of a rejected upload or job: the tensor concerned, what was expected and found."""

    tensor: str | None
    expected: str | None
    found: str | None
    message: str


class ProblemDetails(TypedDict):
    """An RFC 9457 problem: ``status`` and ``title`` always, ``detail`` saying what is wrong."""

    status: int
    title: NotRequired[str]
    detail: NotRequired[str]
    type: NotRequired[str]
    instance: NotRequired[str]
    #: 422s: every problem found
    problems: NotRequired[list[ProblemItem]]
    #: 400s of malformed parameters: which parameter and why
    extra: NotRequired[list[dict[str, Any]] | dict[str, Any] | None]
    #: 5xx: the request's id (also in ``X-Request-ID``), under which the service logged what happened
    request_id: NotRequired[str | None]


class HubErrorBody(TypedDict):
    """An error of the Hub-compatible routes (also in ``X-Error-Message``, with ``X-Error-Code``)."""

    error: str


def _specs(container: type, media: str, statuses: tuple[int, ...]) -> dict[int, ResponseSpec]:
    return {s: ResponseSpec(container, media_type=media, description=REASONS[s], generate_examples=False)
            for s in sorted({400, 503, *statuses})}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """The error responses of an API operation: 400 and 503 always, and ``statuses``."""
    return _specs(ProblemDetails, PROBLEM_JSON, statuses)


def hub_errors(*statuses: int) -> dict[int, ResponseSpec]:
    """The error responses of a Hub-compatible operation (400 and 503 always)."""
    return _specs(HubErrorBody, "application/json", statuses)


BINARY = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
TEXT = Schema(type=OpenAPIType.STRING)
#: What a file download may carry: its own media type (by extension).
FILE_MEDIA = ("application/octet-stream", "application/json", "text/markdown")


def _file_content() -> dict[str, OpenAPIMediaType]:
    return {m: OpenAPIMediaType(schema=BINARY) for m in FILE_MEDIA}


def file_operation() -> type[Operation]:
    """An operation class for a file download: 200 (whole), 206 (a Range), 302 (to storage, on S3)."""

    @dataclass
    class FileOperation(Operation):
        def __post_init__(self) -> None:
            responses = dict(self.responses or {})
            responses["200"] = OpenAPIResponse(description="The file's bytes", content=_file_content())
            responses["206"] = OpenAPIResponse(description="The requested byte range", content=_file_content())
            responses["302"] = OpenAPIResponse(description="On S3: the file at a presigned storage URL")
            self.responses = responses

    return FileOperation


def body_operation(media_type: str, schema: Schema, description: str) -> type[Operation]:
    """An operation class that documents a request body the handler reads itself (so that it can check
    the caller before reading it)."""

    @dataclass
    class BodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(content={media_type: OpenAPIMediaType(schema=schema)},
                                            description=description, required=True)

    return BodyOperation


def form_schema(files: dict[str, bool], fields: dict[str, Schema] | None = None) -> Schema:
    """A multipart form: ``files`` (name -> required) sent as files, and text ``fields``."""
    properties: dict[str, Schema] = {name: BINARY for name in files}
    properties.update(fields or {})
    return Schema(type=OpenAPIType.OBJECT, properties=properties,
                  required=sorted(name for name, needed in files.items() if needed) or None)


__all__ = [
    "BINARY",
    "PROBLEM_JSON",
    "REASONS",
    "TEXT",
    "HubErrorBody",
    "ProblemDetails",
    "ProblemItem",
    "body_operation",
    "file_operation",
    "form_schema",
    "hub_errors",
    "problems",
]
