"""HTTP routes for base models: registration, browsing, and their weights (direct and session uploads)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put, route
from litestar.datastructures import UploadFile
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...body_limits import body_limit, slot_while_parsed, upload_slot
from ...db.models import BaseModel, BaseModelFile, BaseModelUpload
from ...errors import BadRequest, NotFound, TooLarge, reject
from ...openapi import body_operation, file_operation, form_schema, problems
from ...params import FileSize, NamePart, Page, PartNumber, Sha256
from ...settings import Settings
from ...storage import BlobStore
from ...storage.base import MAX_PART_NUMBER
from .. import upload_sessions as sessions
from ..adapters.controller import base_url
from ..adapters.downloads import serve_file
from ..adapters.schemas import PartStored, UploadEnded, UploadSessionInfo
from ..adapters.search import MAX_COUNTED, search_adapters
from ..adapters.service import describe_adapter
from ..adapters.uploads import PART_BODY
from ..auth.guards import signed_in, writer
from ..auth.tokens import Principal
from ..lifecycle.controller import BaseModelDeletes
from ..payloads import upload_payload
from ..quotas import check_quota
from . import service, weights
from .schemas import BaseModelInfo, BaseModelPage, CompatibleAdapters, WeightsFiles

ROOT = "/api/v1/base-models"
#: The 200 of a request that changed nothing (the same signature again, files already stored).
UNCHANGED = ResponseSpec(BaseModelInfo, description="Already there as sent: nothing changed", generate_examples=False)
#: The direct weights upload: ``*.safetensors`` files as multipart form files.
WEIGHTS_FORM = form_schema({"model.safetensors": False})
#: A registration: a signature lists every module of the model, so it may be large.
REGISTER_LIMIT = body_limit(lambda s: s.max_signature_body_bytes, "the registration")
#: Weights sent in a form: the direct-upload limit and the multipart framing.
FILES_LIMIT = body_limit(lambda s: s.max_direct_upload_bytes + 2**20, "the weights form",
                         "; send larger files through an upload session (POST …/uploads)")


class RegisterBaseModel(msgspec.Struct):
    """Register by ``signature`` (from ``sdk.signature``) or by ``config`` (a ``config.json``)."""

    name: Annotated[str, msgspec.Meta(max_length=193, description="'namespace/name'")]
    revision: Annotated[str, msgspec.Meta(max_length=128, description="the exact revision of the weights (a commit "
                                                                      "or tag of where they come from)")] | None = None
    license: Annotated[str, msgspec.Meta(max_length=128, description="the weights' license (SPDX id or name, "
                                                                     "e.g. 'apache-2.0', 'llama3.1')")] | None = None
    signature: dict[str, Any] | None = None
    config: dict[str, Any] | None = None


class NewWeightsUpload(msgspec.Struct):
    """A large weights file to upload in parts: its name, exact size and sha256 (hex)."""

    filename: Annotated[str, msgspec.Meta(max_length=255)]
    size: FileSize
    sha256: Sha256


class FinishWeightsUpload(msgspec.Struct):
    """The parts as uploaded: ``[[part_number, etag], …]``."""

    parts: list[tuple[Annotated[int, msgspec.Meta(ge=1, le=MAX_PART_NUMBER)],
                      Annotated[str, msgspec.Meta(max_length=1024)]]]


class BaseModelController(BaseModelDeletes, Controller):
    """``/api/v1/base-models``"""

    path = ROOT
    tags = ["base models"]

    @post("/", guards=[signed_in, REGISTER_LIMIT], request_max_body_size=None, middleware=[slot_while_parsed],
          responses={**problems(401, 403, 409, 413, 422), 200: UNCHANGED})
    async def register(self, data: RegisterBaseModel, db: AsyncSession, principal: Principal, request: Request,
                       settings: Settings) -> Response[BaseModelInfo]:
        """Register a base model (idempotent for the same signature)."""
        row, created = await service.register(
            db, principal, data.name, revision=data.revision, signature=data.signature, config=data.config,
            license=data.license,
        )
        files = [] if created else (await weights.files_of(db, [row.id]))[row.id]
        await db.commit()
        body = service.describe(row, files=files, root=base_url(request, settings))
        body["license_restrictive"] = settings.restrictive(row.license)
        return Response(body, status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @get("/", responses=problems(401))
    async def list_base_models(self, db: AsyncSession, request: Request, settings: Settings, q: str | None = None,
                               page: Page = 1) -> BaseModelPage:
        """Base models, optionally filtered by text."""
        rows = await service.search(db, q, limit=50, offset=(max(page, 1) - 1) * 50)
        files = await weights.files_of(db, [r.id for r in rows])
        root = base_url(request, settings)
        return {"items": [service.describe(r, files=files[r.id], root=root) for r in rows], "page": page}

    @get("/{ns:str}/{name:str}", responses=problems(404))
    async def get_base_model(self, ns: NamePart, name: NamePart, db: AsyncSession, request: Request,
                             settings: Settings) -> BaseModelInfo:
        """A base model with its full signature and its weights files."""
        row = await _base(db, ns, name)
        files = (await weights.files_of(db, [row.id]))[row.id]
        return service.describe(row, with_signature=True, files=files, root=base_url(request, settings))

    @get("/{ns:str}/{name:str}/adapters", responses=problems(401, 404))
    async def compatible_adapters(
        self, ns: NamePart, name: NamePart, db: AsyncSession, principal: Principal, page: Page = 1,
        cursor: Annotated[str | None, Parameter(max_length=256, description=(
            "continue after the previous answer (its next_cursor); page is then ignored"))] = None,
        count: Annotated[bool, Parameter(description=(
            "also count the matches, up to 1,000 (total; a last page is counted anyway)"))] = False,
    ) -> CompatibleAdapters:
        """Adapters that fit this base model: any adapter whose base model has the same fingerprint
        (newest first; ``next_cursor`` continues while ``has_more``)."""
        row = await _base(db, ns, name)
        found = await search_adapters(db, principal, fingerprint=row.fingerprint, page=page, cursor=cursor,
                                      count_upto=MAX_COUNTED if count and not cursor else 0)
        return {"items": [describe_adapter(a) for a in found.items], "total": found.total,
                "total_exact": found.total_exact, "page": page,
                "fingerprint": row.fingerprint, "has_more": found.has_more, "next_cursor": found.next_cursor}

    # --- weights -------------------------------------------------------------------------------

    @get("/{ns:str}/{name:str}/files", responses=problems(404))
    async def list_files(self, ns: NamePart, name: NamePart, db: AsyncSession, request: Request,
                         settings: Settings) -> WeightsFiles:
        """The base model's weights files (filename, size, sha256, url)."""
        row = await _base(db, ns, name)
        root = base_url(request, settings)
        items = (await weights.files_of(db, [row.id]))[row.id]
        return {"items": [weights.describe_file(f, row, root) for f in items]}

    @post("/{ns:str}/{name:str}/files", guards=[writer, FILES_LIMIT], request_max_body_size=None,
          responses={**problems(401, 403, 404, 409, 413, 422), 200: UNCHANGED},
          operation_class=body_operation("multipart/form-data", WEIGHTS_FORM, "One or more *.safetensors files"))
    async def upload_files(self, ns: NamePart, name: NamePart, request: Request, db: AsyncSession, principal: Principal,
                           store: BlobStore, settings: Settings) -> Response[BaseModelInfo]:
        """Upload one or more ``*.safetensors`` files (multipart form), checked against the signature first."""
        principal.require_write(ns)
        row = await _base(db, ns, name)
        db.expunge_all()
        await db.rollback()  # no connection held while the files are hashed and checked
        async with upload_slot(request):
            return await self._store_files(ns, name, row, request, principal, store, settings)

    async def _store_files(self, ns: str, name: str, row: BaseModel, request: Request, principal: Principal,
                           store: BlobStore, settings: Settings) -> Response[dict]:
        form = await request.form()
        uploads: dict[str, UploadFile] = {}
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                raise reject(f"form field {key!r} is not a file; send each weights file as a file", found=key)
            filename = weights.check_weights_filename(value.filename or key)
            if filename in uploads:
                raise reject(f"{filename} was sent twice", found=filename)
            uploads[filename] = value
        if not uploads:
            raise reject("send one or more *.safetensors files as multipart form files", expected="*.safetensors")
        payloads = [await upload_payload(u, filename, max_header_bytes=settings.max_header_bytes)
                    for filename, u in uploads.items()]
        total = sum(p.size for p in payloads)
        if total > settings.max_direct_upload_bytes:
            raise TooLarge(f"{total} bytes in one request; above {settings.max_direct_upload_bytes} use an upload "
                           f"session (POST {ROOT}/{ns}/{name}/uploads)")
        async with request.app.state.sessionmaker() as quota_db:
            await check_quota(quota_db, settings, ns, total)
        checked = await asyncio.to_thread(weights.check_files, payloads, row.signature,
                                          max_header_bytes=settings.max_header_bytes)
        files, added = await weights.save_files(request.app.state.sessionmaker, store, principal, row, checked,
                                                max_header_bytes=settings.max_header_bytes, quota=settings)
        return _stored(row, files, added, base_url(request, settings))

    @route("/{ns:str}/{name:str}/files/{filename:str}", http_method=["GET", "HEAD"], responses=problems(404, 416),
           operation_class=file_operation())
    async def download_file(self, ns: NamePart, name: NamePart, filename: str, db: AsyncSession, request: Request,
                            store: BlobStore, settings: Settings) -> Response:
        """A weights file's bytes (Range requests supported), or a redirect to storage on S3."""
        row = await _base(db, ns, name)
        f = (await db.execute(select(BaseModelFile).where(BaseModelFile.base_model_id == row.id,
                                                          BaseModelFile.filename == filename))).scalar_one_or_none()
        if f is None:
            raise NotFound(f"base model {ns}/{name} has no weights file {filename!r}")
        db.expunge_all()
        await db.rollback()  # give the connection back before a long download
        redirect = settings.redirect_downloads and settings.uses_s3 and request.query_params.get("stream") != "1"
        # serve_file reads only filename, size and sha256, which a BaseModelFile has as a File does
        return await serve_file(store, f, request.headers.get("range"), redirect=redirect,  # type: ignore[arg-type]
                                expires=settings.presign_expires_s, head=request.method == "HEAD",
                                public=True, fixed=False,  # base models are public; a file is named, not pinned
                                if_none_match=request.headers.get("if-none-match"))

    # --- upload sessions for large weights files -----------------------------------------------

    @post("/{ns:str}/{name:str}/uploads", status_code=HTTP_201_CREATED,
          guards=[writer], responses=problems(401, 403, 404, 409, 413, 422))
    async def start_upload(self, ns: NamePart, name: NamePart, data: NewWeightsUpload, db: AsyncSession,
                           principal: Principal, store: BlobStore, settings: Settings,
                           request: Request) -> UploadSessionInfo:
        """Open an upload session for one weights file; returns the part size and a URL per part."""
        principal.require_write(ns)
        row = await _base(db, ns, name)
        filename = weights.check_weights_filename(data.filename)
        sha = sessions.declared_sha256(data.sha256)
        stored = (await weights.files_of(db, [row.id]))[row.id]
        old = next((f for f in stored if f.filename == filename), None)
        if old is not None and (old.sha256 != sha or old.size != data.size):
            raise weights.not_replaced(old)
        return await sessions.open_session(
            db, store, settings, BaseModelUpload, namespace=ns, owner={"base_model_id": row.id}, filename=filename,
            size=data.size, sha256=sha, created_by=principal.name, hint=f"base-{ns}-{name}", direct=False,
            uploads_url=f"{base_url(request, settings)}{ROOT}/{ns}/{name}/uploads")

    @put("/{ns:str}/{name:str}/uploads/{upload_id:str}/parts/{part_number:int}",
         guards=[writer], request_max_body_size=None,
         responses=problems(401, 403, 404, 413, 422), operation_class=PART_BODY)
    async def upload_part(self, ns: NamePart, name: NamePart, upload_id: str, part_number: PartNumber, request: Request,
                          db: AsyncSession, principal: Principal, store: BlobStore) -> Response[PartStored]:
        """Receive one part through the API (the local backend, which has no presigned URLs)."""
        principal.require_write(ns)
        upload = await _open_upload(db, ns, name, upload_id)
        return await sessions.receive_part(upload, part_number, request, db, store)

    @delete("/{ns:str}/{name:str}/uploads/{upload_id:str}", status_code=HTTP_200_OK, guards=[writer],
            responses=problems(401, 403, 404))
    async def abort_upload(self, ns: NamePart, name: NamePart, upload_id: str, db: AsyncSession, principal: Principal,
                           store: BlobStore) -> UploadEnded:
        """Abandon an upload (an expired one too); its parts are deleted."""
        principal.require_write(ns)
        upload = await _open_upload(db, ns, name, upload_id, allow_expired=True)
        return await sessions.abort_session(db, store, upload, upload_id)

    @post("/{ns:str}/{name:str}/uploads/{upload_id:str}/finalize", status_code=HTTP_201_CREATED,
          guards=[writer], responses={**problems(401, 403, 404, 409, 413, 422), 200: UNCHANGED})
    async def finalize_upload(self, ns: NamePart, name: NamePart, upload_id: str, data: FinishWeightsUpload,
                              request: Request, db: AsyncSession, principal: Principal, store: BlobStore,
                              settings: Settings) -> Response[BaseModelInfo]:
        """Join the parts, check size, sha256 and the header against the signature, then keep the file."""
        principal.require_write(ns)
        upload = await _open_upload(db, ns, name, upload_id)
        row = await db.get_one(BaseModel, upload.base_model_id)
        try:
            parts = [(int(n), str(etag)) for n, etag in data.parts]
        except (ValueError, TypeError) as exc:
            raise BadRequest("'parts' must be [[part_number, etag], ...]") from exc
        files, added = await weights.save_upload(db, request.app.state.sessionmaker, store, principal, row, upload,
                                                 parts, max_header_bytes=settings.max_header_bytes)
        return _stored(row, files, added, base_url(request, settings))


async def _base(db: AsyncSession, ns: NamePart, name: NamePart) -> BaseModel:
    row = await service.get(db, f"{ns}/{name}")
    assert row is not None
    return row


async def _open_upload(db: AsyncSession, ns: NamePart, name: NamePart, upload_id: str, *,
                       allow_expired: bool = False) -> BaseModelUpload:
    """An open upload session of base model ``ns/name``, locked for this transaction."""
    def query(key: uuid.UUID) -> Select[tuple[BaseModelUpload]]:
        return (select(BaseModelUpload).join(BaseModel, BaseModel.id == BaseModelUpload.base_model_id)
                .where(BaseModelUpload.id == key, BaseModel.namespace == ns, BaseModel.name == name)
                .with_for_update(of=BaseModelUpload))

    return await sessions.find_open(db, upload_id, query, f"base model {ns}/{name}", allow_expired=allow_expired)


def _stored(row: BaseModel, files: list[BaseModelFile], added: list[str], root: str) -> Response[BaseModelInfo]:
    body = BaseModelInfo(**service.describe(row, files=files, root=root), added=added)
    return Response(body, status_code=HTTP_201_CREATED if added else HTTP_200_OK)
