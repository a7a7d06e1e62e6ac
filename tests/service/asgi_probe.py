"""Calling the app as an ASGI server would, counting how much of a request body the app reads.

HTTP test clients hand the app the whole body; a server hands it over in chunks as the app asks
for them. :func:`send_raw` does the latter, so a test can tell a body that was refused before it
was read (no chunk asked for) from one that was read and then refused. The app runs in its test
client's event loop (its database pool lives there): :func:`in_app_loop` runs a coroutine there.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

CHUNK = 1 << 20


@dataclass
class Probe:
    """What the app answered, and how many body chunks (and bytes) it asked for."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks_read: int = 0
    bytes_read: int = 0


def zeros(total: int, chunk: int = CHUNK) -> Iterable[bytes]:
    """``total`` zero bytes in chunks of ``chunk`` (made lazily: a 400 MiB body costs nothing unread)."""
    block = bytes(chunk)
    for start in range(0, total, chunk):
        yield block[: min(chunk, total - start)]


async def send_raw(app: Any, method: str, path: str, chunks: Iterable[bytes] | AsyncIterator[bytes] = (), *,
                   headers: dict[str, str] | None = None, content_length: int | None = None,
                   gate: asyncio.Event | None = None, probe: Probe | None = None) -> Probe:
    """Send one request to ``app`` (its lifespan already running) with the body in ``chunks``.

    ``content_length``: the header to declare (none: a chunked body). ``gate``: the body pauses
    after its first chunk until the event is set (to hold a request open). ``probe``: fill this one
    (to watch a request in flight)."""
    probe = probe if probe is not None else Probe()
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if content_length is not None:
        raw_headers.append((b"content-length", str(content_length).encode()))
    path_only, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path_only, "raw_path": path_only.encode(), "query_string": query.encode(), "root_path": "",
             "headers": raw_headers, "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    source = chunks if isinstance(chunks, AsyncIterator) else _aiter(chunks)
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if done:
            await asyncio.sleep(3600)  # like a server: nothing more until the client goes away
        if gate is not None and probe.chunks_read == 1:
            await gate.wait()
        try:
            chunk = await anext(source)
        except StopAsyncIteration:
            done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        probe.chunks_read += 1
        probe.bytes_read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            probe.status = message["status"]
            probe.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            probe.body += message.get("body", b"")

    await app(scope, receive, send)
    return probe


async def in_app_loop(client: Any, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """``await fn(*args, **kwargs)`` in the event loop where ``client`` (a Litestar test client) runs its app."""
    return await asyncio.to_thread(client.blocking_portal.call, functools.partial(fn, *args, **kwargs))


async def probe(client: Any, method: str, path: str, chunks: Iterable[bytes] = (), **kwargs: Any) -> Probe:
    """:func:`send_raw` to ``client``'s app, in its event loop."""
    return await in_app_loop(client, send_raw, client.app, method, path, chunks, **kwargs)


async def _aiter(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


__all__ = ["CHUNK", "Probe", "in_app_loop", "probe", "send_raw", "zeros"]
