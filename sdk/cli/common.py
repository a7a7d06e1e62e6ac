"""What every ``adapters`` command shares: the global options, the client built from them, how a
result is printed (JSON with ``--json``, else tables and lines for people), and how an expected
error becomes one line on stderr and an exit code.

Most commands are "call the registry, then print the answer": :func:`respond` is that pattern,
so each command says only which call it makes and how a person sees the result.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import click
import httpx
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from ..client import Cache, Client, ClientConfig, RegistryUnavailable
from ..errors import AdapterError, ValidationFailed
from ..problems import Problem

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
"""The ``--json`` option, accepted by the root command and by every command."""

# --- global options and the client ------------------------------------------------------------


@dataclass
class State:
    """The global options."""

    url: str | None = None
    token: str | None = None
    cache_dir: Path | None = None
    quiet: bool = False
    json: bool = False

    def client(self) -> Client:
        """A client for the chosen registry (progress bars only on a terminal, and not with --quiet)."""
        return Client(self.url, self.token, cache_dir=self.cache_dir, quiet=True if self.quiet else None)

    def cache(self) -> Cache:
        """The local cache."""
        return Cache(ClientConfig.resolve(self.url, self.token, self.cache_dir).cache_dir)


def state(ctx: typer.Context, as_json: bool = False) -> State:
    """The global options, with a command's own ``--json`` folded in."""
    st = ctx.find_object(State) or State()
    st.json = st.json or as_json
    return st


def respond(ctx: typer.Context, as_json: bool, call: Callable[[Client], T], show: Callable[[T], None], *,
            to_json: Callable[[T], Any] | None = None) -> None:
    """Run ``call`` on a client for the chosen registry, then print what it returned.

    With ``--json`` the result (or ``to_json(result)``) goes to stdout as JSON; otherwise
    ``show(result)`` prints it for people. The client is closed before anything is printed.
    """
    st = state(ctx, as_json)
    with st.client() as c:
        result = call(c)
    emit(st, result, show, to_json=to_json)


def emit(st: State, result: T, show: Callable[[T], None], *, to_json: Callable[[T], Any] | None = None) -> None:
    """Print a command's result: JSON with ``--json`` (``to_json`` shapes it), else ``show(result)``."""
    if st.json:
        print_json(result if to_json is None else to_json(result))
    else:
        show(result)


# --- output -----------------------------------------------------------------------------------

# C0 and C1 control characters and DEL (terminal escapes start with ESC or CSI), and the Unicode
# controls that reorder how a line is shown (bidirectional overrides and isolates)
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(value: object) -> str:
    """``str(value)`` with control characters written as escapes (``\\x1b``), so text a registry
    sent (names, descriptions, error details) cannot move the cursor, retitle or clear a terminal."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))



def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (anything JSON lacks, such as dates, as its ``str``)."""
    typer.echo(json.dumps(data, indent=2, default=str))


def _console() -> Console:
    """Rich output on stdout; when that is not a terminal, lines are never wrapped or cut."""
    console = Console(markup=False, highlight=False)
    return console if console.is_terminal else Console(markup=False, highlight=False, width=10_000)


def table(columns: list[str], rows: list[list[Any]]) -> None:
    """Rows under column headers on stdout (``None`` prints as nothing)."""
    grid = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for col in grid.columns:  # fold (not cut) everything but descriptions on a narrow terminal
        col.overflow = "ellipsis" if col.header == "DESCRIPTION" else "fold"
    for row in rows:
        grid.add_row(*("" if v is None else printable(v) for v in row))
    _console().print(grid)


def fields(pairs: list[tuple[str, Any]]) -> None:
    """One ``key  value`` line per pair on stdout, keys in bold."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(printable(key), "" if value is None else printable(value))
    _console().print(grid)


def size(n: float) -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB`` … ``2.0 GiB``."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def problem_line(p: Problem) -> str:
    """One validation problem as an indented ``  - …`` line (the tensor named once, if at all)."""
    named = p.tensor and (p.tensor in p.message or p.tensor.removeprefix("base_model.model.") in p.message)
    where = f"{p.tensor}: " if p.tensor and not named else ""
    detail = [f"{k} {v}" for k, v in (("expected", p.expected), ("found", p.found)) if v is not None]
    return printable(f"  - {where}{p.message}" + (f" ({', '.join(detail)})" if detail else ""))


def read_config(path: Path) -> dict[str, Any]:
    """A ``config.json`` (a file, or a folder holding one) as a dict."""
    file = path / "config.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AdapterError(f"{file} does not hold a JSON object")
    return data


# --- errors -----------------------------------------------------------------------------------


def _debug() -> bool:
    return os.environ.get("ADAPTER_REGISTRY_DEBUG", "") not in ("", "0")


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def fail(exc: BaseException, code: int, refused: str = "the adapter does not validate") -> NoReturn:
    """One ``error:`` line on stderr (then a ValidationFailed's problems, one a line), and exit."""
    if isinstance(exc, ValidationFailed) and exc.problems:
        typer.echo(f"error: {refused} ({plural(len(exc.problems), 'problem')}):", err=True)
        for p in exc.problems:
            typer.echo(problem_line(p), err=True)
    else:
        typer.echo(f"error: {printable(_one_line(str(exc))) or type(exc).__name__}", err=True)
    raise typer.Exit(code)


class RootGroup(TyperGroup):
    """The root group: turns expected errors into one line on stderr and an exit code
    (3 when the registry could not be reached, else 1); ``ADAPTER_REGISTRY_DEBUG=1`` lets them through."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (AdapterError, OSError, httpx.HTTPError) as exc:
            if _debug():
                raise
            fail(exc, 3 if isinstance(exc, (RegistryUnavailable, httpx.TransportError)) else 1)
