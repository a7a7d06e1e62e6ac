"""Hugging Face Hub-compatible read routes, so unmodified ``huggingface_hub``, ``peft`` and
``transformers`` load adapters from the registry with ``HF_ENDPOINT`` pointing at it.

``/{ns}/{name}/resolve/{revision}/{path}`` (HEAD/GET), ``/api/models/{ns}/{name}``,
``/api/models/{ns}/{name}/revision/{revision}`` and ``/api/models/{ns}/{name}/tree/{revision}[/{path}]``.
Authentication is the registry's own ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from litestar import Controller, Request, Response, get, route
from litestar.exceptions import HTTPException
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncEngine

from ...metrics import S3_DIRECT_BYTES
from ...openapi import file_operation, hub_errors
from ..adapters.caching import fixed_ref, json_response, redirect_cache_control
from ..adapters.downloads import count_download, serve_file
from ..adapters.redaction import inputs_view, visible_files, withheld
from ..auth.tokens import Principal
from ..reading import Read
from . import service
from .errors import EntryNotFound, HubError, hub_error_response
from .schemas import ModelInfo, TreeEntry


def raw_tail(request: Request, marker: str) -> str:
    """The undecoded part of the request path after ``marker`` (e.g. ``/resolve/``)."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    return path.split(marker, 1)[1] if marker in path else ""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class HubController(Controller):
    """The Hub's read API over adapters (repos) and their versions (revisions)."""

    path = "/"
    tags = ["hub-compatible"]
    # read-only routes outside /api/: no CSRF token to mint and set as a cookie on every answer (a
    # Set-Cookie would also keep shared caches from storing the immutable ones)
    opt = {"exclude_from_csrf": True}
    # ProblemDetailsException is named too: the app maps it (for the rest of the API) and it sits before
    # HTTPException in the MRO of the service's errors, so HTTPException alone would not win.
    exception_handlers = {HubError: hub_error_response, ProblemDetailsException: hub_error_response,
                          HTTPException: hub_error_response, Exception: hub_error_response}

    @route("/{ns:str}/{name:str}/resolve/{rest:path}", http_method=["GET", "HEAD"], responses=hub_errors(401, 404, 416),
           operation_class=file_operation())
    async def resolve(self, ns: str, name: str, request: Request, read: Read) -> Response:
        """A file of a revision: its bytes (Range supported), or on S3 a 302 to a presigned URL.

        Either answer carries ``X-Repo-Commit``, the sha256 ``ETag`` and ``X-Linked-Size``: the client
        reads the metadata from the 302 itself, since it does not follow redirects to another origin.
        """
        reader, principal, settings, store = read.reader, read.principal, read.settings, read.store
        revision, path = service.split_raw(raw_tail(request, f"/{ns}/{name}/resolve/"))
        adapter, version = await service.find_repo_revision(reader, principal, ns, name, revision)
        view = await inputs_view(reader, principal, [version])  # queries only for parents
        f = service.find_file(adapter, version, path, withheld(version, view))
        commit = version.commit
        public, fixed = adapter.visibility == "public" and view.all_public, fixed_ref(service.registry_ref(revision))
        await count_download(request.app.state.sessionmaker, adapter.id, f, request.headers.get("range"),
                             request.method)
        meta = service.file_headers(f, commit)
        if settings.redirect_downloads and settings.uses_s3:
            url = await store.presigned_get_url(f.storage_key, f.filename, expires=settings.presign_expires_s)
            # Only a redirect to ANOTHER origin: a same-origin one would be followed by the client's HEAD,
            # and storage does not answer with the metadata headers.
            if url and _origin(url) != _origin(str(request.base_url)):
                if request.method == "GET":
                    S3_DIRECT_BYTES.labels("download").inc(f.size)
                cache = redirect_cache_control(public=public, fixed=fixed, expires_s=settings.presign_expires_s)
                return Redirect(url, status_code=302, headers={**meta, "Cache-Control": cache})
        response = await serve_file(store, f, request.headers.get("range"), redirect=False,
                                    head=request.method == "HEAD", public=public, fixed=fixed,
                                    if_none_match=request.headers.get("if-none-match"))
        for key, value in meta.items():
            response.set_header(key, value)
        return response

    @get("/api/models/{ns:str}/{name:str}", responses=hub_errors(401, 404))
    async def info(self, ns: str, name: str, request: Request, read: Read, blobs: bool = False
                   ) -> Response[ModelInfo]:
        """``model_info`` at the default branch (the latest version)."""
        return await self._info(request, read.reader, read.principal, ns, name, service.DEFAULT_BRANCH, blobs)

    @get("/api/models/{ns:str}/{name:str}/revision/{rest:path}", responses=hub_errors(401, 404))
    async def info_at(self, ns: str, name: str, request: Request, read: Read, blobs: bool = False
                      ) -> Response[ModelInfo]:
        """``model_info``/``repo_info`` at a revision; its ``sha`` is the version's commit."""
        revision = unquote(raw_tail(request, f"/{ns}/{name}/revision/").strip("/"))
        return await self._info(request, read.reader, read.principal, ns, name, revision, blobs)

    @get("/api/models/{ns:str}/{name:str}/tree/{rest:path}", responses=hub_errors(401, 404))
    async def tree(self, ns: str, name: str, request: Request, read: Read) -> Response[list[TreeEntry]]:
        """The files of a revision (a version's files sit at the root: there are no folders)."""
        reader, principal = read.reader, read.principal
        revision, path = service.split_raw(raw_tail(request, f"/{ns}/{name}/tree/"))
        adapter, version = await service.find_repo_revision(reader, principal, ns, name, revision)
        path = path.strip("/")
        if path:
            raise EntryNotFound(f"{ns}/{name}@{version.commit} has no folder {path!r}: its files are at the root",
                                commit=version.commit)
        view = await inputs_view(reader, principal, [version])
        body = [service.tree_entry(f) for f in visible_files(version, view)]
        return json_response(request, body, public=adapter.visibility == "public" and view.all_public,
                             fixed=fixed_ref(service.registry_ref(revision)))

    async def _info(self, request: Request, reader: AsyncEngine, principal: Principal, ns: str,
                    name: str, revision: str, blobs: bool) -> Response[ModelInfo]:
        adapter, version = await service.find_repo_revision(reader, principal, ns, name, revision)
        view = await inputs_view(reader, principal, [version])
        body = service.model_info(adapter, version, blobs=blobs,
                                  files=visible_files(version, view))
        return json_response(request, body, public=adapter.visibility == "public" and view.all_public,
                             fixed=fixed_ref(service.registry_ref(revision)))


__all__ = ["HubController"]
