"""What the client checks in the registry's answers before it uses them.

The client trusts no server value: a commit, digest, file name or size becomes part of a path in
the cache, or a number of bytes to write, only after it passed the checks here, and a URL the
registry hands back gets the bearer token only when it points at the registry's own origin
(scheme, host and port of the client's base URL). Storage URLs never get the token, and nothing
is fetched over http from an https registry.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from ..errors import AdapterError
from ..names import COMMIT, SHA256, filename_problem, name_problem, shown

__all__ = [
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_PARTS",
    "UnsafeResponse",
    "commit",
    "filename",
    "job_id",
    "name",
    "parts",
    "registry_url",
    "sha256",
    "size",
    "storage_url",
    "upload_session",
    "version_number",
]

#: The largest file size the client accepts from the registry (1 TiB).
MAX_FILE_BYTES = 1 << 40
#: The most files one adapter version may list.
MAX_FILES = 64
#: The most parts one upload session may list (S3's own limit).
MAX_PARTS = 10_000
_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f\\]")  # controls, space and backslash: never in a URL we use
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeResponse(AdapterError):
    """The registry answered with a value the client refuses to use: a path piece that could leave
    the cache, a URL that would take the token elsewhere, an impossible size. Nothing was written."""


def _refuse(what: str, value: object, rule: str) -> UnsafeResponse:
    return UnsafeResponse(f"the registry sent {what} {shown(value)}; the client refuses it: {rule}")


def commit(value: object) -> str:
    """A commit id: 40 lowercase hex digits."""
    if not isinstance(value, str) or not COMMIT.match(value):
        raise _refuse("the commit", value, "a commit is 40 lowercase hex digits")
    return value


def sha256(value: object) -> str:
    """A sha256 digest: 64 lowercase hex digits."""
    if not isinstance(value, str) or not SHA256.match(value):
        raise _refuse("the sha256", value, "a sha256 is 64 lowercase hex digits")
    return value


def filename(value: object) -> str:
    """A plain file name (see :func:`sdk.names.filename_problem`)."""
    problem = filename_problem(value)
    if problem:
        raise _refuse("the file name", value, problem)
    assert isinstance(value, str)
    return value


def size(value: object, limit: int = MAX_FILE_BYTES) -> int:
    """A byte count: an integer from 0 to ``limit``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise _refuse("the size", value, f"a size is an integer from 0 to {limit}")
    return value


def version_number(value: object) -> int:
    """A version number: an integer from 1 to 2**63 - 1."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**63:
        raise _refuse("the version number", value, "a version number is a positive 64-bit integer")
    return value


def name(value: object) -> tuple[str, str]:
    """A ``namespace/name`` the registry answered with, as (namespace, name)."""
    problem = name_problem(value)
    if problem:
        raise _refuse("the name", value, problem)
    assert isinstance(value, str)
    ns, _, rest = value.partition("/")
    return ns, rest


def job_id(value: object) -> str:
    """An id (merge job, upload session): letters, digits, '-' and '_', at most 64."""
    if not isinstance(value, str) or not _ID.match(value):
        raise _refuse("the id", value, "an id is letters, digits, '-' and '_' (at most 64)")
    return value


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``; ``("", "", -1)`` for what cannot be parsed as a URL."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a broken IPv6 literal, a port that is no number
        return "", "", -1


def registry_url(base_url: str, value: object) -> str:
    """A URL the registry handed back for a request that carries the token: an absolute path
    (relative to the registry) or an absolute URL on the registry's own origin."""
    if not isinstance(value, str) or _CONTROL.search(value):
        raise _refuse("the URL", value, "it must be a path or URL on the registry")
    if value.startswith("/") and not value.startswith("//"):
        return value
    origin = _origin(value)
    if origin[0] not in ("http", "https") or not origin[1] or origin != _origin(base_url):
        raise _refuse("the URL", value, f"requests with the token go only to the registry's own origin ({base_url})")
    return value


def storage_url(base_url: str, value: object) -> str:
    """A storage URL (a presigned part or download URL), requested without the token: http or https,
    and never http when the registry itself is https."""
    if not isinstance(value, str) or _CONTROL.search(value):
        raise _refuse("the storage URL", value, "it must be an http(s) URL")
    scheme, host, _ = _origin(value)
    if scheme not in ("http", "https") or not host:
        raise _refuse("the storage URL", value, "it must be an absolute http(s) URL")
    if scheme == "http" and _origin(base_url)[0] == "https":
        raise _refuse("the storage URL", value, "an https registry's transfers never fall back to plain http")
    return value


def parts(session: Any, size_: int) -> tuple[int, dict[int, str]]:
    """The part size and ``{part number: URL}`` of an upload session for a file of ``size_`` bytes:
    a positive part size, part numbers between 1 and the number of parts the file needs (at most
    :data:`MAX_PARTS`), each once, each with a URL (not yet checked: see :func:`registry_url` and
    :func:`storage_url`)."""
    if not isinstance(session, dict):
        raise _refuse("the upload session", type(session).__name__, "it must be a JSON object")
    part = session.get("part_size")
    if type(part) is not int or part < 1:
        raise _refuse("the part size", part, "a part size is a positive integer")
    needed = max(1, -(-size_ // part))
    if needed > MAX_PARTS:
        raise _refuse("the part size", part, f"a {size_}-byte file would need {needed} parts; at most {MAX_PARTS}")
    listed = session.get("parts")
    if not isinstance(listed, list) or len(listed) > needed:
        count = len(listed) if isinstance(listed, list) else listed
        raise _refuse("a part list of", count, f"a {size_}-byte file in {part}-byte parts has {needed} parts")
    urls: dict[int, str] = {}
    for p in listed:
        n = p.get("part_number") if isinstance(p, dict) else None
        if type(n) is not int or not 1 <= n <= needed or n in urls:
            raise _refuse("the part number", n, f"parts are numbered 1 to {needed}, once each")
        url = p.get("url")
        if not isinstance(url, str):
            raise _refuse("a part URL", url, "every part needs a URL")
        urls[n] = url
    return part, urls


def upload_session(body: Any, size_: int) -> dict[str, Any]:
    """An upload session answer: an id, and exactly the parts a file of ``size_`` bytes needs (see
    :func:`parts`)."""
    _, urls = parts(body, size_)
    job_id(body.get("id"))
    needed = max(1, -(-size_ // body["part_size"]))
    if len(urls) != needed:
        raise _refuse("a part list of", len(urls), f"a {size_}-byte file needs {needed} parts")
    return body
