"""``adapters whoami``, ``adapters logout`` and ``adapters tokens create|ls|revoke``: who the token is,
forgetting it, and managing tokens (``/api/v1/whoami``, ``/api/v1/tokens``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..client import Client, forget_login
from ..durations import parse_duration
from ..errors import AdapterError
from .common import JsonOpt, emit, fields, printable, respond, state, table

app = typer.Typer()
tokens_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API tokens.")


def _scope(body: dict[str, Any]) -> str:
    return f"namespace {body.get('namespace')}" if body.get("namespace") else "all namespaces"


@app.command()
def whoami(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The token in use: its name, namespace, scopes and expiry."""

    def show(who: dict[str, Any]) -> None:
        if not who.get("authenticated"):
            typer.echo("anonymous (no token)")
            return
        fields([("name", who.get("name")), ("id", who.get("id")), ("namespace", _scope(who)),
                ("scopes", ", ".join(map(str, who.get("scopes") or []))),
                ("expires", who.get("expires_at") or "never")])

    respond(ctx, as_json, lambda c: c.http.json("GET", "/api/v1/whoami"), show)


@app.command()
def logout(
    ctx: typer.Context,
    revoke: Annotated[bool, typer.Option("--revoke", help="Also revoke the token on the registry.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Forget the saved token (``--revoke``: revoke it on the registry first, so it stops working everywhere)."""
    st = state(ctx, as_json)
    revoked = None
    if revoke:
        with st.client() as c:
            who = c.http.json("GET", "/api/v1/whoami")
            if not who.get("authenticated"):
                raise AdapterError("no token to revoke")
            revoked = c.http.json("DELETE", f"/api/v1/tokens/{int(who['id'])}")
    path = forget_login()

    def show(_: Any) -> None:
        if revoked:
            typer.echo(f"revoked token {revoked['id']}")
        typer.echo(f"removed the token from {path}" if path else "no saved token to remove")

    emit(st, {"revoked": revoked, "config": str(path) if path else None}, show)


@tokens_app.command("create")
def create(
    ctx: typer.Context,
    namespace: Annotated[str | None, typer.Option(help="Namespace (omit for a global admin token).")] = None,
    scope: Annotated[list[str], typer.Option(help="read, write or admin (repeatable).")] = ["read"],  # noqa: B006
    name: Annotated[str, typer.Option(help="A label for the token.")] = "",
    expires_in: Annotated[str | None, typer.Option(
        help="Lifetime: 90d, 12h, 30m, 3600 (seconds) or 'never' (default: the registry's).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token (an admin token of the namespace, or a global admin, may). It is printed once."""
    try:
        seconds = None if expires_in is None else (parse_duration(expires_in) or 0)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires-in") from None
    body: dict[str, Any] = {"namespace": namespace, "scopes": scope, "name": name}
    if seconds is not None:
        body["expires_in"] = seconds

    def show(made: dict[str, Any]) -> None:
        typer.echo(made["token"])
        typer.echo(printable(f"token {made['id']} for {_scope(made)}, scopes {', '.join(made['scopes'])}, "
                             f"expires {made.get('expires_at') or 'never'}"), err=True)

    respond(ctx, as_json, lambda c: c.http.json("POST", "/api/v1/tokens", json=body), show)


@tokens_app.command("ls")
def ls(
    ctx: typer.Context,
    namespace: Annotated[str | None, typer.Option(help="Only tokens of this namespace.")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked tokens.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Tokens this token may manage: itself; all of its namespace for a namespace admin; all for a global admin."""

    def call(c: Client) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"include_revoked": str(revoked).lower()}
        if namespace:
            params["namespace"] = namespace
        return list(c.http.json("GET", "/api/v1/tokens", params=params)["items"])

    def state_of(t: dict[str, Any]) -> str:
        word = "revoked" if t["revoked"] else "active" if t["active"] else "expired"
        return word + (" (this one)" if t["current"] else "")

    def show(items: list[dict[str, Any]]) -> None:
        table(["ID", "NAME", "NAMESPACE", "SCOPES", "EXPIRES", "STATE"],
              [[t["id"], t["name"], t.get("namespace") or "(all)", ",".join(t["scopes"]),
                t.get("expires_at") or "never", state_of(t)] for t in items])

    respond(ctx, as_json, call, show)


@tokens_app.command("revoke")
def revoke_token(
    ctx: typer.Context,
    token_id: Annotated[int, typer.Argument(help="The token's id (adapters tokens ls).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token: every API process and worker refuses it from now on."""
    respond(ctx, as_json, lambda c: c.http.json("DELETE", f"/api/v1/tokens/{token_id}"),
            lambda body: typer.echo(f"revoked token {body['id']}"))
