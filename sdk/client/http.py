"""HTTP with retries: backoff on network errors, 429 and 5xx; problem details become SDK errors."""

from __future__ import annotations

import json
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import httpx

from ..errors import AdapterError, ValidationFailed
from ..problems import Problem
from .trust import UnsafeResponse

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: The largest API answer (JSON) the client reads; a registry that sends more is refused.
MAX_RESPONSE_BYTES = 64 << 20
#: How much of an error answer is read to find its problem details.
MAX_PROBLEM_BYTES = 1 << 20

StorageIO: TypeAlias = Literal["stdlib", "httpx"]
"""How transfers reach presigned storage URLs. ``"stdlib"`` (the default): with ``http.client``,
faster than httpx here (see transfers.read_range_into), except URLs the environment sends through
a proxy, which go through httpx. ``"httpx"``: always through ``Http.plain``, so that a swapped
transport carries storage traffic too (tests watch and break it there)."""


class RegistryError(AdapterError):
    """The registry answered with an error; ``status``, ``detail`` and ``kind`` (the last part of the
    problem type, e.g. ``"upload-rejected"``) say what."""

    def __init__(self, status: int, detail: str, hint: str = "", kind: str = "") -> None:
        self.status = status
        self.detail = detail
        self.kind = kind
        super().__init__(f"registry answered {status}: {detail}{hint}")


class RegistryAuthError(RegistryError):
    """401/403: no token, a wrong token, or a token without the needed scope."""


class RegistryNotFound(RegistryError):
    """404: no such adapter/version/file (or it is private and the token cannot see it)."""


class RegistryUnavailable(AdapterError):
    """The registry could not be reached after retries."""


def read_capped(response: httpx.Response, limit: int, *, refuse: bool = True) -> bytes:
    """The (decoded) body of a streamed response, at most ``limit`` bytes: more is refused with
    :class:`~.trust.UnsafeResponse`, or with ``refuse=False`` cut off."""
    chunks: list[bytes] = []
    got = 0
    for chunk in response.iter_bytes():
        got += len(chunk)
        if got > limit:
            if refuse:
                raise UnsafeResponse(f"the registry's answer to {response.request.method} {response.request.url.path} "
                                     f"is larger than {limit} bytes; the client refuses it")
            chunks.append(chunk[: len(chunk) - (got - limit)])
            break
        chunks.append(chunk)
    return b"".join(chunks)


def in_memory(response: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> httpx.Response:
    """A streamed response read (at most ``limit`` bytes, else refused) into an ordinary one, and closed."""
    try:
        body = read_capped(response, limit)
    finally:
        response.close()
    headers = [(k, v) for k, v in response.headers.multi_items()
               if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=headers, content=body, request=response.request,
                          extensions={"reason_phrase": response.reason_phrase.encode()})


def json_body(response: httpx.Response) -> Any:
    """The JSON of a successful answer already read; raises the registry's problem otherwise."""
    raise_for_problem(response)
    try:
        return response.json()
    except ValueError as exc:
        raise UnsafeResponse(f"the registry's answer to {response.request.method} {response.request.url.path} "
                             f"is not JSON: {exc}") from None


def _problem_body(response: httpx.Response) -> dict[str, Any]:
    """The problem-details object of an error answer (read, at most :data:`MAX_PROBLEM_BYTES`), or ``{}``."""
    try:
        raw = response.content
    except httpx.ResponseNotRead:
        raw = read_capped(response, MAX_PROBLEM_BYTES, refuse=False)
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def raise_for_problem(response: httpx.Response) -> None:
    """Turn an error response (RFC 9457 problem details) into the matching exception."""
    if response.status_code < 400:
        return
    body = _problem_body(response)
    detail = str(body.get("detail") or body.get("title") or response.reason_phrase or "error")
    if response.status_code == 422 and isinstance(body.get("problems"), list):
        probs = [Problem(p.get("tensor"), p.get("expected"), p.get("found"), p.get("message", "")) for p in
                 body["problems"] if isinstance(p, dict)]
        raise ValidationFailed(probs or [Problem(None, None, None, detail)])
    cls = {401: RegistryAuthError, 403: RegistryAuthError, 404: RegistryNotFound}.get(response.status_code,
                                                                                      RegistryError)
    hint = ""
    if response.status_code == 401:
        hint = " (set ADAPTER_REGISTRY_TOKEN or run `adapters login`)"
    kind = str(body.get("type") or "").rsplit("/", 1)[-1]
    raise cls(response.status_code, detail, hint, kind)


class Http:
    """A thin retrying layer over ``httpx.Client`` (the transport can be swapped for tests).

    ``storage_io`` says how presigned storage URLs are read and written (see :data:`StorageIO`);
    a swapped ``transport`` carries storage traffic only with ``storage_io="httpx"``.
    """

    def __init__(self, base_url: str, token: str | None, *, transport: httpx.BaseTransport | None = None,
                 storage_io: StorageIO = "stdlib", timeout: float = 60.0, retries: int = 5,
                 backoff: float = 0.3) -> None:
        if storage_io not in ("stdlib", "httpx"):
            raise ValueError(f"storage_io must be 'stdlib' or 'httpx', got {storage_io!r}")
        headers = {"User-Agent": "adapter-hub-sdk"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.storage_io = storage_io
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        self.client = httpx.Client(base_url=base_url, headers=headers, transport=transport, timeout=timeout,
                                   limits=limits, follow_redirects=False)
        # for presigned storage URLs: no registry token may leak there
        self.plain = httpx.Client(transport=transport, timeout=timeout, limits=limits, follow_redirects=True)

    def close(self) -> None:
        self.client.close()
        self.plain.close()

    def stdlib_storage(self, url: str) -> bool:
        """Whether a presigned storage ``url`` is read or written with the standard library: with
        ``storage_io="stdlib"``, unless the environment sends requests to it through a proxy
        (httpx honours proxies; the standard-library path does not)."""
        return self.storage_io == "stdlib" and not _proxied(url)

    def sleep(self, attempt: int) -> None:
        time.sleep(self.backoff * (2**attempt) * (0.5 + random.random()))

    def call(self, send: Callable[[], httpx.Response], *, idempotent: bool = True) -> httpx.Response:
        """Run ``send`` with retries; non-idempotent calls retry only when nothing reached the server."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                response = send()
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc
            except httpx.TransportError as exc:
                if not idempotent:
                    raise RegistryUnavailable(f"connection to {self.base_url} failed mid-request: {exc}") from exc
                last = exc
            else:
                if response.status_code in RETRY_STATUS and idempotent and attempt < self.retries:
                    response.close()
                    self.sleep(attempt)
                    continue
                return response
            if attempt < self.retries:
                self.sleep(attempt)
        raise RegistryUnavailable(f"cannot reach the registry at {self.base_url}: {last}")

    def fetch(self, method: str, url: str, *, plain: bool = False, **kw: Any) -> httpx.Response:
        """One request, its answer read into memory (at most :data:`MAX_RESPONSE_BYTES`): to the registry
        with the token, or with ``plain`` to a storage URL without it."""
        client = self.plain if plain else self.client
        return in_memory(client.send(client.build_request(method, url, **kw), stream=True))

    def request(self, method: str, path: str, *, idempotent: bool | None = None, **kw: Any) -> httpx.Response:
        """A request to the registry API; raises on error statuses."""
        safe = method in ("GET", "HEAD", "PUT", "DELETE") if idempotent is None else idempotent
        response = self.call(lambda: self.fetch(method, path, **kw), idempotent=safe)
        raise_for_problem(response)
        return response

    def json(self, method: str, path: str, **kw: Any) -> Any:
        """The JSON body of a successful request."""
        return json_body(self.request(method, path, **kw))


def _proxied(url: str) -> bool:
    """Whether the environment sends requests to ``url`` through a proxy."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return bool(urllib.request.getproxies()) and not urllib.request.proxy_bypass(host)
