"""Editing from the adapter page, for writers of its namespace: description and tags, and setting or
moving aliases. Plain POST forms carrying the CSRF field (``_csrf_token``, Litestar's name); the changes
go through the same domain functions as the JSON API (``domain.adapters.editing``)."""

from __future__ import annotations

from litestar import Controller, Request, Response, post
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.adapters import service as adapters
from ..domain.adapters.editing import edit_metadata, move_alias
from ..domain.auth.tokens import Principal
from ..domain.events import new_event
from ..errors import BadRequest

#: A form's fields are read only up to this size (a description is at most a few KB).
MAX_FIELD_CHARS = 20_000


def _field(form: object, key: str) -> str:
    value = form.get(key)  # type: ignore[attr-defined]
    text = value if isinstance(value, str) else ""
    if len(text) > MAX_FIELD_CHARS:
        raise BadRequest(f"{key} is longer than {MAX_FIELD_CHARS} characters")
    return text


class EditPages(Controller):
    """``POST /adapters/{ns}/{name}/edit`` and ``POST /adapters/{ns}/{name}/aliases``."""

    include_in_schema = False

    @post("/adapters/{ns:str}/{name:str}/edit", status_code=303)
    async def edit(self, request: Request, ns: str, name: str, db: AsyncSession, viewer: Principal) -> Response:
        """Replace the description and the tags (comma- or space-separated)."""
        form = await request.form()
        adapter = await adapters.get_adapter(db, viewer, ns, name, lock=True)
        tags = [t for t in _field(form, "tags").replace(",", " ").split() if t]
        changed = edit_metadata(adapter, viewer, description=_field(form, "description").strip(), tags=tags)
        if changed:
            db.add(new_event("adapter.edited", viewer, namespace=ns, adapter=name, details=changed))
        await db.commit()
        return Redirect(f"/adapters/{ns}/{name}#about", status_code=303)

    @post("/adapters/{ns:str}/{name:str}/aliases", status_code=303)
    async def alias(self, request: Request, ns: str, name: str, db: AsyncSession, viewer: Principal) -> Response:
        """Point an alias (new or existing) at a version."""
        form = await request.form()
        alias, ref = _field(form, "alias").strip(), _field(form, "version").strip()
        if not alias or not ref:
            raise BadRequest("give the alias and the version it should point at")
        adapter = await adapters.get_adapter(db, viewer, ns, name, lock=True)
        version = await move_alias(db, adapter, viewer, alias, ref)
        await db.commit()
        return Redirect(f"/adapters/{ns}/{name}/versions/{version.version}#aliases", status_code=303)


__all__ = ["EditPages"]
