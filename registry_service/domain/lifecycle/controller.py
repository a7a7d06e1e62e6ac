"""Deletion routes: ``DELETE /api/v1/adapters/{ns}/{name}/versions/{ref}`` (yank, ``?purge=true``
also removes the files), ``DELETE /api/v1/adapters/{ns}/{name}`` and
``DELETE /api/v1/base-models/{ns}/{name}`` (mixed into the controllers of those paths, which own
their other methods), and the Hub's ``DELETE /api/repos/delete``."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.plugins.problem_details import ProblemDetailsException
from sqlalchemy.ext.asyncio import AsyncSession

from ...errors import BadRequest, NotFound
from ...openapi import hub_errors, problems
from ...params import NamePart
from ...storage import BlobStore
from ..auth.guards import writer
from ..auth.tokens import Principal
from ..hub.errors import HubError, RepoNotFound, hub_error_response
from . import service

Reason = Annotated[str, Parameter(max_length=service.MAX_REASON_CHARS, description="why (shown with the 410)")]


class AdapterDeletes:
    """Yank, purge and delete routes, mixed into the adapters controller (``/api/v1/adapters``)."""

    @delete("/{ns:str}/{name:str}/versions/{ref:str}", status_code=200, guards=[writer],
            responses=problems(400, 401, 403, 404, 409))
    async def yank_version(self, ns: NamePart, name: NamePart, ref: str, request: Request, db: AsyncSession,
                           principal: Principal, store: BlobStore, reason: Reason = "",
                           purge: bool = False) -> dict[str, Any]:
        """Yank a version (by number or commit): it answers 410 Gone with ``reason`` from now on and
        leaves ``latest``. ``purge=true`` (namespace admins) also removes its files."""
        removed = await service.yank(db, principal, ns, name, ref, reason, purge=purge)
        return await service.commit_and_discard(db, request.app.state.sessionmaker, store, removed)

    @delete("/{ns:str}/{name:str}", status_code=200, responses=problems(401, 403, 404))
    async def delete_adapter(self, ns: NamePart, name: NamePart, request: Request, db: AsyncSession,
                             principal: Principal, store: BlobStore) -> dict[str, Any]:
        """Delete an adapter with every version (namespace admins)."""
        removed = await service.delete_adapter(db, principal, ns, name)
        return await service.commit_and_discard(db, request.app.state.sessionmaker, store, removed)


class BaseModelDeletes:
    """The delete route, mixed into the base models controller (``/api/v1/base-models``)."""

    @delete("/{ns:str}/{name:str}", status_code=200, responses=problems(401, 403, 404, 409))
    async def delete_base_model(self, ns: NamePart, name: NamePart, request: Request, db: AsyncSession,
                                principal: Principal, store: BlobStore) -> dict[str, Any]:
        """Delete a base model and its weights (namespace admins); refused while anything depends on it."""
        removed = await service.delete_base_model(db, principal, ns, name)
        return await service.commit_and_discard(db, request.app.state.sessionmaker, store, removed)


class HubRepoDelete(msgspec.Struct):
    """What ``HfApi.delete_repo`` sends."""

    name: Annotated[str, msgspec.Meta(max_length=96)]
    organization: Annotated[str, msgspec.Meta(max_length=96)] | None = None
    type: Annotated[str, msgspec.Meta(max_length=16)] | None = None


class HubDeleteController(Controller):
    """``DELETE /api/repos/delete`` as ``huggingface_hub.HfApi.delete_repo`` calls it (models only)."""

    path = "/api/repos"
    tags = ["hub-compatible"]
    exception_handlers = {HubError: hub_error_response, ProblemDetailsException: hub_error_response,
                          HTTPException: hub_error_response, Exception: hub_error_response}

    @delete("/delete", status_code=200, responses=hub_errors(400, 401, 403, 404, 413))
    async def delete_repo(self, data: HubRepoDelete, request: Request, db: AsyncSession, principal: Principal,
                          store: BlobStore) -> None:
        """Delete the adapter ``organization/name`` (namespace admins), as :meth:`delete_adapter` does."""
        if data.type not in (None, "model"):
            raise BadRequest(f"this registry holds models (adapters) only, not {data.type}s")
        if not data.organization:
            raise BadRequest("name the repo as 'namespace/name'")
        try:
            removed = await service.delete_adapter(db, principal, data.organization, data.name)
        except (NotFound, BadRequest) as exc:
            raise RepoNotFound(f"Repository {data.organization}/{data.name} not found: {exc.detail}",
                               anonymous=not principal.authenticated) from exc
        await service.commit_and_discard(db, request.app.state.sessionmaker, store, removed)


__all__ = ["AdapterDeletes", "BaseModelDeletes", "HubDeleteController"]
