"""``adapters login``: check a token with the registry and save it, with the URL, for later commands."""

from __future__ import annotations

from typing import Annotated

import typer

from ..client import Client, ClientConfig, RegistryAuthError, save_login
from ..errors import AdapterError
from .common import JsonOpt, print_json, printable, state

app = typer.Typer()


@app.command()
def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Registry URL.")] = None,
    token: Annotated[str | None, typer.Option(help="API token (prompted for when missing).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a token with the registry and save it (with the URL) for later commands."""
    st = state(ctx, as_json)
    final_url = ClientConfig.resolve(url or st.url).url
    secret = token or st.token or typer.prompt("Token", hide_input=True, err=True)
    with Client(final_url, secret, cache_dir=st.cache_dir) as c:
        try:
            who = c.http.json("GET", "/api/v1/whoami")
        except RegistryAuthError as exc:
            raise AdapterError(f"{final_url} did not accept this token (HTTP {exc.status})") from exc
    if not who.get("authenticated"):
        raise AdapterError(f"{final_url} did not accept this token")
    path = save_login(final_url, secret)
    if st.json:
        print_json({"url": final_url, "whoami": who, "config": str(path)})
        return
    scope = f"namespace {who.get('namespace')}" if who.get("namespace") else "all namespaces"
    typer.echo(printable(f"logged in to {final_url} as {who.get('name')} ({scope}; "
                         f"scopes: {', '.join(map(str, who.get('scopes', [])))})"))
    typer.echo(f"saved to {path}")
