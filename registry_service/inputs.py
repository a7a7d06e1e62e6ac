"""Guards on what a request carries before any handler sees it: text that PostgreSQL cannot store
(NUL characters), JSON nested deeper than any real body, and form fields that are not UTF-8. Each
answers a 400 problem that names the problem, instead of an error deep inside a query."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import FormMultiDict
from litestar.exceptions import SerializationException

from .errors import BadRequest

#: Deepest JSON body accepted (a signature or a ``config.json`` nests a handful of levels).
MAX_JSON_DEPTH = 32
NUL = "\x00"
MAX_PATH = 200  # characters of a JSON path quoted in an error


def json_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """What is wrong with a decoded JSON value for storage: nested deeper than ``max_depth``, or a NUL
    character in a key or a string (PostgreSQL's text and jsonb cannot hold one); None when nothing is."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "$")]
    while stack:  # ``where`` (a JSON path) is cut short: keys come from the client
        item, depth, where = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return f"a NUL character in the string at {where}"
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= max_depth:
            return f"nesting deeper than {max_depth} levels (at {where})"
        if isinstance(item, list):
            stack.extend((v, depth + 1, f"{where}[{i}]"[:MAX_PATH]) for i, v in enumerate(item))
            continue
        for key, v in item.items():
            if NUL in key:
                return f"a NUL character in a key of {where}"
            stack.append((v, depth + 1, f"{where}.{key}"[:MAX_PATH]))
    return None


def check_json(value: Any) -> None:
    """400 when :func:`json_problem` finds something wrong with a JSON body."""
    if (problem := json_problem(value)) is not None:
        raise BadRequest(f"the JSON body has {problem}")


class RegistryRequest(Request):
    """The service's request: JSON bodies and forms are checked as they are read."""

    async def json(self) -> Any:
        """The JSON body, checked by :func:`check_json` (400 when it is too deep or holds NUL characters)."""
        try:
            value = await super().json()
        except RecursionError as exc:  # msgspec stops at the interpreter's recursion limit
            raise BadRequest(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels") from exc
        except SerializationException as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from exc
        check_json(value)
        return value

    async def form(self) -> FormMultiDict:
        """The form fields; 400 when a text field is not UTF-8."""
        try:
            return await super().form()
        except UnicodeDecodeError as exc:
            raise BadRequest(f"a form field is not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc


async def reject_nul_parameters(request: Request) -> None:
    """``before_request`` hook: 400 when a path or query parameter holds a NUL character (``%00``).

    A coroutine on purpose: Litestar runs a plain function hook in a worker thread, a thread hop on
    every request."""
    query = request.scope.get("query_string", b"")
    if NUL not in request.scope.get("path", "") and b"%00" not in query and b"\x00" not in query:
        return  # no parameter can hold one (the path is decoded already, the query string not yet)
    pairs = [("path", k, v) for k, v in request.path_params.items()]
    pairs += [("query", k, v) for k, v in request.query_params.multi_items()]
    for where, key, value in pairs:
        if NUL in str(value) or NUL in key:
            raise BadRequest(f"the {where} parameter {key!r} contains a NUL character")


__all__ = ["MAX_JSON_DEPTH", "RegistryRequest", "check_json", "json_problem", "reject_nul_parameters"]
