"""HTTP routes for compositions: search, metadata, versions (publish), a version's stored file, aliases."""

from __future__ import annotations

import datetime as dt

from litestar import Controller, Request, Response, get, post, put
from litestar.status_codes import HTTP_201_CREATED
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import CompositionAlias, CompositionVersion, Event
from ...errors import BadRequest, NotFound
from ...names import check_alias
from ...openapi import problems
from ...params import AliasName, NamePart, Page, PageSize
from ...settings import Settings
from ...storage import BlobStore
from ..adapters.caching import cache_control, file_etag, fixed_ref, json_response, matches, not_modified
from ..adapters.controller import AliasTarget, base_url
from ..auth.guards import writer
from ..auth.tokens import Principal
from . import service
from .publish import publish
from .schemas import CompositionIn, CompositionInfo, CompositionPage, CompositionVersionInfo


class CompositionController(Controller):
    """``/api/v1/compositions``"""

    path = service.ROOT
    tags = ["compositions"]

    @get("/", responses=problems(401))
    async def list_compositions(self, db: AsyncSession, principal: Principal, base_model: str | None = None,
                                q: str | None = None, page: Page = 1, page_size: PageSize = 20) -> CompositionPage:
        """Search compositions by base model and text."""
        items, total = await service.search(db, principal, base_model=base_model, q=q, page=page,
                                            page_size=min(max(page_size, 1), 100))
        return {"items": [service.describe_composition(c) for c in items],  # type: ignore[misc]
                "total": total, "page": page}

    @get("/{ns:str}/{name:str}", responses=problems(401, 404))
    async def get_composition(self, ns: NamePart, name: NamePart, db: AsyncSession, principal: Principal,
                              request: Request) -> Response[CompositionInfo]:
        """A composition with its aliases and current routing kind (with an ETag; revalidated by caches)."""
        comp = await service.get_composition(db, principal, ns, name)
        latest = await service.resolve_version(db, comp, None)
        public = await service.require_members_readable(db, principal, comp, latest)
        body = service.describe_composition(comp, await service.aliases_of(db, comp), latest.routing.get("kind", ""))
        return json_response(request, body, public=public, fixed=False)

    @post("/{ns:str}/{name:str}/versions", status_code=HTTP_201_CREATED, guards=[writer],
          responses=problems(400, 401, 403, 404, 409, 413, 422))
    async def create_version(self, ns: NamePart, name: NamePart, data: CompositionIn, request: Request,
                             principal: Principal, store: BlobStore, settings: Settings
                             ) -> Response[CompositionVersionInfo]:
        """Publish a version: members pinned by commit, their routing (Arrow prototypes computed here, once)."""
        comp, version = await publish(request.app.state.sessionmaker, store, principal, ns, name, data)
        body = service.describe_version(comp, version, base_url(request, settings))
        return Response(body, status_code=HTTP_201_CREATED)  # type: ignore[arg-type]

    @get("/{ns:str}/{name:str}/versions", responses=problems(401, 404))
    async def list_versions(self, ns: NamePart, name: NamePart, db: AsyncSession, principal: Principal,
                            request: Request) -> Response[list[CompositionVersionInfo]]:
        """The newest 100 versions, newest first (with an ETag; it changes with every publish)."""
        comp = await service.get_composition(db, principal, ns, name)
        rows = await service.versions_of(db, comp)
        public = comp.visibility == "public"
        if rows:
            public = await service.require_members_readable(db, principal, comp, rows[0])
        return json_response(request, [service.describe_version(comp, v) for v in rows], public=public, fixed=False)

    @get("/{ns:str}/{name:str}/versions/{ref:str}", responses=problems(401, 404))
    async def get_version(self, ns: NamePart, name: NamePart, ref: str, db: AsyncSession, principal: Principal,
                          request: Request, settings: Settings) -> Response[CompositionVersionInfo]:
        """One version by number, alias or commit (with an ETag; ``If-None-Match`` answers 304). Publicly
        cacheable for good only when it and every member are public and it is addressed by number or commit."""
        comp = await service.get_composition(db, principal, ns, name)
        version = await service.resolve_version(db, comp, ref)
        public = await service.require_members_readable(db, principal, comp, version)
        body = service.describe_version(comp, version, base_url(request, settings))
        return json_response(request, body, public=public, fixed=fixed_ref(ref))

    @get("/{ns:str}/{name:str}/versions/{ref:str}/files/{filename:str}", responses=problems(401, 404))
    async def download(self, ns: NamePart, name: NamePart, ref: str, filename: str, db: AsyncSession,
                       principal: Principal, request: Request) -> Response[bytes]:
        """A version's stored file (Arrow prototypes, or a learned router's weights); its ETag is the quoted
        sha256, and a match answers 304."""
        comp = await service.get_composition(db, principal, ns, name)
        version = await service.resolve_version(db, comp, ref)
        public = await service.require_members_readable(db, principal, comp, version)
        stored = service.stored_file_name(version)
        if stored is None or filename != stored or version.prototypes_sha256 is None:
            raise NotFound(f"{ns}/{name}@{version.version} has no file {filename[:100]!r}")
        etag = file_etag(version.prototypes_sha256)
        cache = cache_control(public=public, fixed=fixed_ref(ref))
        if matches(request.headers.get("if-none-match"), etag):
            return not_modified(etag, cache)  # type: ignore[return-value]
        data = (await db.execute(select(CompositionVersion.prototypes).where(CompositionVersion.id == version.id))
                ).scalar_one()
        return Response(data, media_type="application/octet-stream", headers={
            "ETag": etag, "X-Content-Sha256": version.prototypes_sha256, "Cache-Control": cache,
            "Content-Disposition": f'attachment; filename="{stored}"'})

    @put("/{ns:str}/{name:str}/aliases/{alias:str}", guards=[writer], responses=problems(400, 401, 403, 404))
    async def set_alias(self, ns: NamePart, name: NamePart, alias: AliasName, data: AliasTarget, db: AsyncSession,
                        principal: Principal) -> dict[str, object]:
        """Point an alias at a version (``latest`` is automatic)."""
        check_alias(alias)
        if alias == "latest":
            raise BadRequest("'latest' always points at the newest version and cannot be moved")
        comp = await service.get_composition(db, principal, ns, name, lock=True)
        principal.require_write(ns)
        version = await service.resolve_version(db, comp, str(data.version))
        now = dt.datetime.now(dt.UTC)
        await db.execute(insert(CompositionAlias).values(
            composition_id=comp.id, name=alias, version_id=version.id, updated_at=now,
        ).on_conflict_do_update(index_elements=["composition_id", "name"],
                                set_={"version_id": version.id, "updated_at": now}))
        db.add(Event(actor=principal.name, kind="alias", subject=f"{ns}/{name}",
                     data={"alias": alias, "version": version.version, "composition": True}))
        await db.commit()
        return {"alias": alias, "version": version.version, "commit": version.commit}
