"""HTTP routes for adapters: search, metadata, versions, files, aliases, and direct pushes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put, route
from litestar.datastructures import UploadFile
from litestar.params import Parameter
from litestar.status_codes import HTTP_201_CREATED
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ...body_limits import body_limit, upload_slot
from ...db.models import Alias
from ...errors import BadRequest, NotFound, TooLarge, reject
from ...names import check_alias
from ...openapi import TEXT, body_operation, file_operation, form_schema, problems
from ...params import AliasName, NamePart, Page, PageSize, VersionCursor, VersionsLimit
from ...settings import Settings
from ...storage import BlobStore
from ..auth.guards import writer
from ..auth.tokens import Principal
from ..events import new_event
from ..lifecycle.controller import AdapterDeletes
from ..payloads import upload_payload
from ..quotas import check_quota
from ..reading import Read
from . import reads, search, service
from .alias_history import MAX_HISTORY_PAGE, history, record_moves
from .caching import fixed_ref, json_response
from .downloads import count_download, serve_file
from .editing import edit_metadata, move_alias
from .metadata import MAX_DESCRIPTION_CHARS, MAX_TAG_CHARS, MAX_TAGS
from .publish import publish, push_options, restrictive_note
from .redaction import inputs_view, withheld, withheld_message
from .schemas import (
    AdapterInfo,
    AdapterPage,
    AliasDeleted,
    AliasHistory,
    AliasMoved,
    PublishedVersion,
    VersionInfo,
    VersionList,
)
from .service import MAX_VERSION
from .validation import CONFIG_FILE, MAX_CONFIG_BYTES, MAX_README_BYTES, README_FILE, WEIGHTS_FILE, check_filename
from .visibility import change_visibility

ROOT = "/api/v1/adapters"
#: The engines of the serving report (sdk.serving_compat.ENGINES), as a search filter.
Engine = Literal["vllm", "sglang", "tgi", "llama.cpp"]
#: The push form (``POST …/versions``): the version's files, and fields that come with them.
PUSH_FORM = form_schema({CONFIG_FILE: True, WEIGHTS_FILE: True, README_FILE: False}, {
    "base_model": TEXT, "alias": TEXT, "tags": TEXT, "description": TEXT, "private": TEXT, "untrained": TEXT,
    "metrics": TEXT, "params": TEXT, "dataset": TEXT,
    "license": TEXT})

#: Bytes of a push's form besides its weights (config, README, fields, multipart framing).
FORM_OVERHEAD_BYTES = 4 * 2**20
#: A push's body: the direct-upload limit plus the rest of the form.
PUSH_LIMIT = body_limit(lambda s: s.max_direct_upload_bytes + FORM_OVERHEAD_BYTES, "the push",
                        "; send larger weights through an upload session (POST …/uploads)")


async def read_small(upload: UploadFile | str, limit: int, what: str) -> bytes:
    """A small form file's bytes, refusing anything above ``limit``."""
    data = upload.encode() if isinstance(upload, str) else await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{what} is larger than {limit} bytes")
    return data


class AdapterPatch(msgspec.Struct):
    """Editable adapter fields (omitted ones stay as they are)."""

    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION_CHARS)] | None = None
    tags: Annotated[list[Annotated[str, msgspec.Meta(max_length=MAX_TAG_CHARS)]],
                    msgspec.Meta(max_length=MAX_TAGS)] | None = None
    visibility: Literal["public", "private"] | None = None


class AliasTarget(msgspec.Struct):
    """The version an alias should point at: its number, or its 40-hex commit (or another alias)."""

    version: Annotated[int, msgspec.Meta(ge=1, le=MAX_VERSION)] | Annotated[str, msgspec.Meta(max_length=64)]


class AdapterController(AdapterDeletes, Controller):
    """``/api/v1/adapters``"""

    path = ROOT
    tags = ["adapters"]

    @get("/", responses=problems(401))
    async def list_adapters(
        self,
        read: Read,
        base_model: str | None = None,
        method: str | None = None,
        tag: str | None = None,
        q: Annotated[str | None, Parameter(max_length=256)] = None,
        page: Page = 1,
        page_size: PageSize = 20,
        cursor: Annotated[str | None, Parameter(max_length=256, description=(
            "continue after the previous answer (its next_cursor); page is then ignored"))] = None,
        count: Annotated[bool, Parameter(description=(
            "also count the matches, up to 1,000 (total; a last page is counted anyway)"))] = False,
        serves: Annotated[Engine | None, Parameter(description="an engine the latest version loads on")] = None,
        max_lora_rank: Annotated[int | None, Parameter(ge=1, le=2**31 - 1, description=(
            "the --max-lora-rank a vLLM server runs with: adapters whose latest version loads on it"))] = None,
    ) -> AdapterPage:
        """Search adapters by base model, method, tag and text, and by what serves them (``serves=vllm``,
        ``max_lora_rank=16``: the serving-compatibility report of their latest version), newest first:
        ``has_more`` says whether more follow and ``next_cursor`` fetches them (``page`` still pages by
        offset). ``total``: the number of matches when the page is the last one, or with ``count=true``
        (up to 1,000; ``total_exact`` says whether that is all); null otherwise, since a count scans every
        match."""
        found = await search.search_adapters(read.reader, read.principal, base_model=base_model, method=method,
                                             tag=tag, q=q, page=page, page_size=min(max(page_size, 1), 100),
                                             cursor=cursor, serves=serves, max_lora_rank=max_lora_rank,
                                             count_upto=search.MAX_COUNTED if count and not cursor else 0)
        return {"items": [service.describe_adapter(a) for a in found.items], "total": found.total,
                "total_exact": found.total_exact, "page": page, "has_more": found.has_more,
                "next_cursor": found.next_cursor}

    @get("/{ns:str}/{name:str}", responses=problems(401, 404))
    async def get_adapter(self, ns: NamePart, name: NamePart, read: Read) -> AdapterInfo:
        """An adapter with its aliases."""
        adapter, aliases = await reads.read_adapter(read.reader, read.principal, ns, name)
        return service.describe_adapter(adapter, aliases)

    @patch("/{ns:str}/{name:str}", guards=[writer], responses=problems(401, 403, 404, 413))
    async def edit_adapter(self, ns: NamePart, name: NamePart, data: AdapterPatch, db: AsyncSession,
                           principal: Principal) -> AdapterInfo:
        """Change description, tags (writers of the namespace) or visibility (namespace admins only: an admin
        token of the namespace, or a global admin)."""
        adapter = await service.get_adapter(db, principal, ns, name, lock=True)
        changed: dict[str, Any] = edit_metadata(adapter, principal, description=data.description, tags=data.tags)
        if data.visibility is not None:
            if data.visibility not in ("public", "private"):
                raise BadRequest("visibility must be 'public' or 'private'")
            change_visibility(db, principal, adapter, data.visibility)
        if changed:
            db.add(new_event("adapter.edited", principal, namespace=ns, adapter=name, details=changed))
        await db.commit()
        return service.describe_adapter(adapter, await service.aliases_of(db, adapter))

    @post("/{ns:str}/{name:str}/versions", status_code=HTTP_201_CREATED,
          guards=[writer, PUSH_LIMIT], request_max_body_size=None, responses=problems(401, 403, 404, 409, 413, 422),
          operation_class=body_operation("multipart/form-data", PUSH_FORM, "The version's files and push fields"))
    async def push(self, ns: NamePart, name: NamePart, request: Request, principal: Principal, store: BlobStore,
                   settings: Settings) -> Response[PublishedVersion]:
        """Publish a version from a multipart form (adapter_config.json, adapter_model.safetensors[, README.md])."""
        async with upload_slot(request):
            return await self._push(ns, name, request, principal, store, settings)

    async def _push(self, ns: str, name: str, request: Request, principal: Principal, store: BlobStore,
                    settings: Settings) -> Response[dict]:
        form = await request.form()
        files: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile) or key in (CONFIG_FILE, WEIGHTS_FILE, README_FILE):
                check_filename(key, value.filename if isinstance(value, UploadFile) else None)
                if key in files:
                    raise reject(f"{key} was sent twice", found=key)
                files[key] = value
        for needed in (CONFIG_FILE, WEIGHTS_FILE):
            if needed not in files:
                raise reject(f"the push has no {needed}", expected=needed)
        if not isinstance(files[WEIGHTS_FILE], UploadFile):
            raise reject(f"{WEIGHTS_FILE} must be sent as a file", found="text field")
        config_raw = await read_small(files[CONFIG_FILE], MAX_CONFIG_BYTES, CONFIG_FILE)
        readme = await read_small(files[README_FILE], MAX_README_BYTES, README_FILE) if README_FILE in files else None
        weights = await upload_payload(files[WEIGHTS_FILE], WEIGHTS_FILE, max_header_bytes=settings.max_header_bytes)
        async with request.app.state.sessionmaker() as quota_db:
            await check_quota(quota_db, settings, ns, weights.size + len(config_raw) + len(readme or b""))
        adapter, version, notes = await publish(
            request.app.state.sessionmaker, store, principal, ns, name, config_raw=config_raw, weights=weights,
            readme=readme, options=push_options(form), max_header_bytes=settings.max_header_bytes, quota=settings,
        )
        if settings.restrictive(adapter.base_model.license):
            notes.append(restrictive_note(adapter.base_model))
        body = PublishedVersion(**service.describe_version(adapter, version, base_url(request, settings),
                                                           restrictive=settings.restrictive),
                                url=f"{base_url(request, settings)}/adapters/{ns}/{name}", notes=notes)
        return Response(body, status_code=HTTP_201_CREATED)

    @get("/{ns:str}/{name:str}/versions", responses=problems(401, 404))
    async def list_versions(self, ns: NamePart, name: NamePart, read: Read, request: Request,
                            limit: VersionsLimit = 100, before: VersionCursor = None) -> Response[VersionList]:
        """The versions, newest first, ``limit`` at a time: ``before`` (the previous answer's ``next_before``)
        continues below that version number; ``has_more`` says whether more follow (with an ETag;
        revalidated by caches, it changes with every push)."""
        reader, principal = read.reader, read.principal
        adapter, aliases, rows = await reads.read_adapter_versions(reader, principal, ns, name, limit=limit + 1,
                                                                   before=before)
        more = len(rows) > limit
        rows = rows[:limit]
        view = await inputs_view(reader, principal, rows)  # queries only when some version has parents
        body = {"items": [service.describe_version(adapter, v, view=view, restrictive=read.settings.restrictive)
                          for v in rows],
                "aliases": aliases, "has_more": more, "next_before": rows[-1].version if more else None}
        return json_response(request, body, public=adapter.visibility == "public" and view.all_public, fixed=False)

    @get("/{ns:str}/{name:str}/versions/{ref:str}", responses=problems(401, 404))
    async def get_version(self, ns: NamePart, name: NamePart, ref: str, read: Read, request: Request
                          ) -> Response[VersionInfo]:
        """One version by number, alias or commit (with an ETag; ``If-None-Match`` answers 304). Publicly cacheable
        for good only when public and addressed by number or commit."""
        adapter, version = await reads.read_version(read.reader, read.principal, ns, name, ref)
        view = await inputs_view(read.reader, read.principal, [version])  # queries only for parents
        body = service.describe_version(adapter, version, base_url(request, read.settings), view,
                                        restrictive=read.settings.restrictive)
        return json_response(request, body, public=adapter.visibility == "public" and view.all_public,
                             fixed=fixed_ref(ref))

    @route("/{ns:str}/{name:str}/versions/{ref:str}/files/{filename:str}", http_method=["GET", "HEAD"],
           responses=problems(401, 404, 416), operation_class=file_operation())
    async def download(self, ns: NamePart, name: NamePart, ref: str, filename: str, read: Read, request: Request
                       ) -> Response:
        """A file's bytes (Range requests supported), or a redirect to storage on S3."""
        reader, principal, settings = read.reader, read.principal, read.settings
        adapter, version = await reads.read_version(reader, principal, ns, name, ref)
        view = await inputs_view(reader, principal, [version])
        if filename in withheld(version, view):
            raise NotFound(withheld_message(f"{ns}/{name}", version.version, filename))
        f = next((f for f in version.files if f.filename == filename), None)
        if f is None:
            raise NotFound(f"{ns}/{name}@{version.version} has no file {filename!r}")
        public = adapter.visibility == "public" and view.all_public
        await count_download(request.app.state.sessionmaker, adapter.id, f, request.headers.get("range"),
                             request.method)
        redirect = settings.redirect_downloads and settings.uses_s3 and request.query_params.get("stream") != "1"
        return await serve_file(read.store, f, request.headers.get("range"), redirect=redirect,
                                expires=settings.presign_expires_s, head=request.method == "HEAD",
                                public=public, fixed=fixed_ref(ref), if_none_match=request.headers.get("if-none-match"))

    @put("/{ns:str}/{name:str}/aliases/{alias:str}", guards=[writer], responses=problems(401, 403, 404, 413))
    async def set_alias(self, ns: NamePart, name: NamePart, alias: AliasName, data: AliasTarget, db: AsyncSession,
                        principal: Principal) -> AliasMoved:
        """Point an alias at a version (``latest`` is automatic)."""
        check_alias(alias)
        if alias == "latest":
            raise BadRequest("'latest' always points at the newest version and cannot be moved")
        adapter = await service.get_adapter(db, principal, ns, name, lock=True)
        version = await move_alias(db, adapter, principal, alias, data.version)
        await db.commit()
        return {"alias": alias, "version": version.version, "commit": version.commit}

    @delete("/{ns:str}/{name:str}/aliases/{alias:str}", status_code=200, guards=[writer],
            responses=problems(401, 403, 404))
    async def delete_alias(self, ns: NamePart, name: NamePart, alias: AliasName, db: AsyncSession,
                           principal: Principal) -> AliasDeleted:
        """Remove an alias."""
        adapter = await service.get_adapter(db, principal, ns, name, lock=True)
        principal.require_write(ns)
        if alias == "latest":
            raise BadRequest("'latest' cannot be deleted")
        row = (await db.execute(select(Alias).where(Alias.adapter_id == adapter.id, Alias.name == alias))
               ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"{ns}/{name} has no alias {alias!r}")
        await record_moves(db, adapter.id, [alias], None, principal.name)
        await db.delete(row)
        db.add(new_event("alias.removed", principal, namespace=ns, adapter=name, details={"alias": alias}))
        await db.commit()
        return {"deleted": alias}

    @get("/{ns:str}/{name:str}/aliases/{alias:str}/history", responses=problems(401, 404))
    async def alias_history(self, ns: NamePart, name: NamePart, alias: AliasName, db: AsyncSession,
                            principal: Principal, before: Annotated[int | None, Parameter(ge=1)] = None,
                            limit: Annotated[int, Parameter(ge=1, le=MAX_HISTORY_PAGE)] = 20) -> AliasHistory:
        """Every move of the alias, newest first: the version (and commit) it pointed at from ``at`` on, who
        moved it; ``version`` null where it was removed. Older moves: ``?before=<id of the last one>``."""
        check_alias(alias)
        adapter = await service.get_adapter(db, principal, ns, name)
        items = await history(db, adapter.id, alias, limit=limit, before=before)
        if not items and before is None:
            raise NotFound(f"{ns}/{name} has no alias {alias!r} and never had one")
        current = (await service.aliases_of(db, adapter)).get(alias)
        return {"alias": alias, "current": current, "items": items}


def base_url(request: Request, settings: Settings) -> str:
    """The public URL of the service (configured, or as the request reached it)."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


