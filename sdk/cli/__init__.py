"""``adapters``: the adapter registry from the command line.

Results go to stdout (``--json`` makes them JSON and nothing else), messages and errors to
stderr. Exit codes: 0 success, 1 a user error (bad input, unknown adapter, refused upload,
failed check), 2 a usage error, 3 the registry could not be reached. Set
``ADAPTER_REGISTRY_DEBUG=1`` to see tracebacks.

One module per command group; this one holds the root command (the global options) and puts
the groups together, in the order ``adapters --help`` lists them. What the commands share
(options, client, output, errors) is in :mod:`.common`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import adapters, alias, base_models, cache, check, compositions, lifecycle, login, merges, tokens
from .common import JsonOpt, RootGroup, State

__all__ = ["app", "main"]

app = typer.Typer(cls=RootGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Push, pull, browse and check adapters in an adapter registry.")
app.add_typer(login.app)
app.add_typer(tokens.app)
app.add_typer(adapters.app)
app.add_typer(merges.app)
app.add_typer(check.app)
app.add_typer(alias.app, name="alias")
app.add_typer(base_models.app, name="base-models")
app.add_typer(cache.app, name="cache")
app.add_typer(merges.jobs_app, name="jobs")
app.add_typer(compositions.app, name="compositions")
app.add_typer(tokens.tokens_app, name="tokens")
app.add_typer(lifecycle.app)
app.add_typer(lifecycle.webhooks_app, name="webhooks")


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(
        help="Registry URL (default: $ADAPTER_REGISTRY_URL, the login file, or http://127.0.0.1:8000).")] = None,
    token: Annotated[str | None, typer.Option(
        help="API token (default: $ADAPTER_REGISTRY_TOKEN or the login file).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Cache folder (default: $ADAPTER_REGISTRY_CACHE or ~/.cache/adapter-registry).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Push, pull, browse and check adapters in an adapter registry."""
    ctx.obj = State(url, token, cache_dir, quiet, as_json)


def main() -> None:
    """The ``adapters`` console script."""
    app(prog_name="adapters")
