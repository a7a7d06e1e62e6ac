"""``adapters delete``, ``adapters events`` and ``adapters webhooks``: taking versions and adapters
back, reading a namespace's audit log, and managing its webhooks. ``adapters base-models rm`` is
registered on the base-models group from here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from ..client import Client
from .base_models import app as base_models_app
from .common import JsonOpt, printable, respond, table

app = typer.Typer()
webhooks_app = typer.Typer(no_args_is_help=True, help="Webhooks of a namespace (namespace admins).")

Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _confirm(what: str, yes: bool) -> None:
    if not yes and not typer.confirm(f"{what}: this cannot be undone. Go on?", default=False, err=True):
        raise typer.Exit(1)


def _delete(ctx: typer.Context, as_json: bool, yes: bool, what: str, call: Callable[[Client], dict[str, Any]],
            line: Callable[[dict[str, Any]], str]) -> None:
    """Ask first (unless ``--yes``), then delete and say what went."""
    _confirm(f"delete {what}", yes)
    respond(ctx, as_json, call, lambda body: typer.echo(printable(line(body))))


@app.command("delete")
def delete(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="namespace/name@version to yank one version; namespace/name to delete "
                                            "the whole adapter.")],
    reason: Annotated[str, typer.Option(help="Why (shown to everyone who asks for the version).")] = "",
    purge: Annotated[bool, typer.Option("--purge", help="Also remove the version's files (namespace admins).")] = False,
    yes: Yes = False,
    as_json: JsonOpt = False,
) -> None:
    """Yank a version (it answers 410 Gone with the reason and leaves latest), or delete an adapter."""
    name, at, version = ref.partition("@")
    if at:
        if purge:
            _confirm(f"purge the files of {ref}", yes)

        def shown(body: dict[str, Any]) -> None:
            state = "purged" if body["yanked"]["purged"] else "yanked"
            typer.echo(printable(f"{state} {body['adapter']}@{body['version']} (commit {body['commit'][:12]})"))

        respond(ctx, as_json, lambda c: c.yank(name, version, reason, purge=purge), shown)
        return
    if purge or reason:
        raise typer.BadParameter("--reason and --purge are for one version: name it as namespace/name@version")
    _delete(ctx, as_json, yes, f"{name} with every version", lambda c: c.delete_adapter(name),
            lambda body: f"deleted {body['deleted']} ({body['versions']} versions)")


@base_models_app.command("rm")
def base_rm(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="namespace/name")],
    yes: Yes = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a base model and its weights (refused while adapters or merged models use it)."""
    _delete(ctx, as_json, yes, f"base model {name}", lambda c: c.delete_base_model(name),
            lambda body: f"deleted {body['deleted']}")


@app.command("events")
def events(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="The namespace.")],
    adapter: Annotated[str | None, typer.Option(help="Only this adapter of the namespace (its name).")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1, max=10_000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The audit log of a namespace: who changed what, when, in which request (namespace admins)."""

    def show(items: list[dict[str, Any]]) -> None:
        table(["when", "kind", "subject", "actor", "request"],
              [[e["at"], e["kind"], e["subject"], e["actor"]["name"], e["request_id"] or ""] for e in items])

    respond(ctx, as_json, lambda c: c.events(namespace, adapter, limit=limit), show)


@webhooks_app.command("create")
def webhook_create(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="The namespace.")],
    url: Annotated[str, typer.Argument(help="Where to POST events (http or https).")],
    event: Annotated[list[str] | None, typer.Option("--event", help="An event kind (repeat; default all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a webhook; prints its signing secret (shown only this once)."""

    def show(body: dict[str, Any]) -> None:
        typer.echo(printable(f"webhook {body['id']} -> {body['url']} ({', '.join(body['events'])})"))
        typer.echo(f"secret {body['secret']}")

    respond(ctx, as_json, lambda c: c.create_webhook(namespace, url, event or None), show)


@webhooks_app.command("ls")
def webhook_ls(ctx: typer.Context, namespace: Annotated[str, typer.Argument(help="The namespace.")],
               as_json: JsonOpt = False) -> None:
    """The webhooks of a namespace."""
    respond(ctx, as_json, lambda c: c.webhooks(namespace),
            lambda items: table(["id", "url", "events", "created by"],
                                [[h["id"], h["url"], ", ".join(h["events"]), h["created_by"]] for h in items]))


@webhooks_app.command("rm")
def webhook_rm(ctx: typer.Context, namespace: Annotated[str, typer.Argument(help="The namespace.")],
               webhook_id: Annotated[int, typer.Argument(help="The webhook's id.")], as_json: JsonOpt = False) -> None:
    """Remove a webhook."""
    respond(ctx, as_json, lambda c: c.delete_webhook(namespace, webhook_id),
            lambda body: typer.echo(f"removed webhook {body['deleted']}"))


@webhooks_app.command("deliveries")
def webhook_deliveries(ctx: typer.Context, namespace: Annotated[str, typer.Argument(help="The namespace.")],
                       webhook_id: Annotated[int, typer.Argument(help="The webhook's id.")],
                       as_json: JsonOpt = False) -> None:
    """The delivery log of a webhook, newest first."""
    respond(ctx, as_json, lambda c: c.webhook_deliveries(namespace, webhook_id),
            lambda items: table(["id", "event", "state", "attempts", "last answer"],
                                [[d["id"], d["event_id"], d["state"], d["attempts"],
                                  d["last_status"] or d["last_error"] or ""] for d in items]))
