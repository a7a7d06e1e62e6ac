"""The UI's yank and delete forms (shown on the adapter page to those who may use them). Each needs
the box "I understand" ticked; the same domain services as the API do the work, so the same rules
hold (aliases must be moved first, purging and deleting need a namespace admin)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.auth.tokens import Principal
from ..domain.lifecycle import service
from ..errors import BadRequest, Unauthorized
from ..storage import BlobStore

Form = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]


def _confirmed(data: dict[str, Any], viewer: Principal) -> None:
    if not viewer.authenticated:
        raise Unauthorized("sign in first")
    if str(data.get("confirm", "")).lower() not in ("1", "on", "yes", "true"):
        raise BadRequest("tick the box to confirm: this cannot be undone")


class LifecyclePages(Controller):
    """``POST /adapters/{ns}/{name}/versions/{ref}/yank`` and ``POST /adapters/{ns}/{name}/delete``."""

    include_in_schema = False

    @post("/adapters/{ns:str}/{name:str}/versions/{ref:str}/yank", status_code=303)
    async def yank(self, ns: str, name: str, ref: str, data: Form, request: Request, db: AsyncSession,
                   viewer: Principal, store: BlobStore) -> Response:
        """Yank a version (and purge it when asked), then show the adapter."""
        _confirmed(data, viewer)
        removed = await service.yank(db, viewer, ns, name, ref, str(data.get("reason", ""))[:service.MAX_REASON_CHARS],
                                     purge=str(data.get("purge", "")).lower() in ("1", "on", "yes", "true"))
        await service.commit_and_discard(db, request.app.state.sessionmaker, store, removed)
        return Redirect(f"/adapters/{ns}/{name}", status_code=303)

    @post("/adapters/{ns:str}/{name:str}/delete", status_code=303)
    async def delete(self, ns: str, name: str, data: Form, request: Request, db: AsyncSession, viewer: Principal,
                     store: BlobStore) -> Response:
        """Delete the adapter, then go home."""
        _confirmed(data, viewer)
        removed = await service.delete_adapter(db, viewer, ns, name)
        await service.commit_and_discard(db, request.app.state.sessionmaker, store, removed)
        return Redirect("/", status_code=303)


__all__ = ["LifecyclePages"]
