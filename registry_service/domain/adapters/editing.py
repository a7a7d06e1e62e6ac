"""Changing an adapter after it was pushed: its description, tags and visibility, and its aliases. Shared
by the JSON API and the web UI's forms (the caller commits)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.dialects.postgresql import insert

from ...db.models import Adapter, AdapterVersion, Alias
from ...errors import BadRequest
from ...names import check_alias
from ..auth.tokens import Principal
from ..events import new_event
from .alias_history import record_moves
from .metadata import check_metadata, clean_tags
from .service import aliases_of, resolve_version


def edit_metadata(adapter: Adapter, principal: Principal, *, description: str | None = None,
                  tags: list[str] | None = None) -> dict[str, Any]:
    """Apply the given description and tags (None: unchanged) to ``adapter`` (read with ``lock=True``);
    returns what changed. Visibility has its own rules (``visibility.change_visibility``)."""
    principal.require_write(adapter.namespace)
    check_metadata(description, tags)
    if description is not None:
        adapter.description = description
    if tags is not None:
        adapter.tags = clean_tags(tags)
    adapter.updated_at = dt.datetime.now(dt.UTC)
    return {k: v for k, v in (("description", description), ("tags", tags)) if v is not None}


async def move_alias(db: Any, adapter: Adapter, principal: Principal, alias: str, ref: str | int) -> AdapterVersion:
    """Point ``alias`` of ``adapter`` (read with ``lock=True``) at version ``ref`` (number, commit or alias)."""
    check_alias(alias)
    if alias == "latest":
        raise BadRequest("'latest' always points at the newest version and cannot be moved")
    principal.require_write(adapter.namespace)
    version = await resolve_version(db, adapter, ref)
    before = (await aliases_of(db, adapter)).get(alias)
    now = dt.datetime.now(dt.UTC)
    await record_moves(db, adapter.id, [alias], version, principal.name)
    await db.execute(
        insert(Alias).values(adapter_id=adapter.id, name=alias, version_id=version.id, updated_at=now)
        .on_conflict_do_update(index_elements=["adapter_id", "name"],
                               set_={"version_id": version.id, "updated_at": now})
    )
    if before != version.version:
        db.add(new_event("alias.set" if before is None else "alias.moved", principal, namespace=adapter.namespace,
                         adapter=adapter.name, details={"alias": alias, "version": version.version, "from": before}))
    return version
