"""HTTP caching of versions and files: who may keep an answer, for how long, and conditional requests.

- A response about something not everyone may read the same way (a private adapter, or a merged
  version whose inputs are not all public, see :mod:`.redaction`) is ``private, no-cache``: no shared
  cache keeps it, a browser revalidates it.
- A moving reference (``latest``, an alias, the Hub's ``main`` or a branch) is ``public, no-cache``:
  caches revalidate it every time (cheap, with the ETag).
- Only a public file or version addressed by commit or by version number is ``public, max-age=31536000,
  immutable``.
- A redirect to a presigned storage URL is ``private, no-store`` for private files (the URL is a bearer
  capability), and for public ones is kept at most half the URL's life (``no-cache`` when moving).

Every version and file answer has an ETag (files: the quoted sha256; JSON: a hash of the body), and a
matching ``If-None-Match`` answers 304.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import MediaType, Request, Response

from ...names import COMMIT

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, no-cache"
PRIVATE = "private, no-cache"
_NUMBER = re.compile(r"^[0-9]{1,19}\Z")


def fixed_ref(ref: str | int | None) -> bool:
    """Whether a version reference always names the same version: a number or a 40-hex commit."""
    text = "" if ref is None else str(ref)
    return bool(_NUMBER.match(text) or COMMIT.match(text))


def cache_control(*, public: bool, fixed: bool) -> str:
    """``Cache-Control`` of a version or file answer (``public``: the same for every reader)."""
    if not public:
        return PRIVATE
    return IMMUTABLE if fixed else REVALIDATE


def redirect_cache_control(*, public: bool, fixed: bool, expires_s: int) -> str:
    """``Cache-Control`` of a redirect to a presigned URL that is valid for ``expires_s`` seconds."""
    if not public:
        return "private, no-store"
    return f"public, max-age={expires_s // 2}" if fixed else REVALIDATE


def file_etag(sha256: str) -> str:
    """A file's ETag: its quoted sha256 (what the Hub's clients expect)."""
    return f'"{sha256}"'


def body_etag(body: Any) -> str:
    """A JSON body's ETag: a hash of its encoding (weak: the same JSON may be encoded otherwise)."""
    return encoded_etag(msgspec.json.encode(body))


def encoded_etag(encoded: bytes) -> str:
    """The ETag of a JSON body already encoded (:func:`body_etag`)."""
    return f'W/"{hashlib.sha256(encoded).hexdigest()[:32]}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (weak comparison, as RFC 9110 says for it) or is ``*``."""
    if not if_none_match:
        return False
    want = etag.removeprefix("W/")
    return any(t == "*" or t.removeprefix("W/") == want for t in (t.strip() for t in if_none_match.split(",")))


def not_modified(etag: str, cache: str, extra: Mapping[str, str] | None = None) -> Response:
    """The 304 answer (no body) with the validators a 200 would carry."""
    return Response(b"", status_code=304, headers={"ETag": etag, "Cache-Control": cache, **(extra or {})})


def json_response(request: Request, body: Any, *, public: bool, fixed: bool) -> Response:
    """``body`` as JSON with its ETag and ``Cache-Control``, or 304 when the client has it already (the
    body is encoded once: the ETag is the hash of the very bytes sent)."""
    encoded = msgspec.json.encode(body)
    etag = encoded_etag(encoded)
    cache = cache_control(public=public, fixed=fixed)
    if matches(request.headers.get("if-none-match"), etag):
        return not_modified(etag, cache)
    return Response(encoded, media_type=MediaType.JSON, headers={"ETag": etag, "Cache-Control": cache})

__all__ = ["IMMUTABLE", "PRIVATE", "REVALIDATE", "body_etag", "cache_control", "encoded_etag", "file_etag",
           "fixed_ref", "json_response", "matches", "not_modified", "redirect_cache_control"]
