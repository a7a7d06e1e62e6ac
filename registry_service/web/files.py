"""A version's files from its pages: downloads for whoever is signed in (the page's viewer, not a bearer
token), and a viewer that shows configs and READMEs inline. Visibility is the API's: a private adapter's
files answer 404 to everyone who may not read it."""

from __future__ import annotations

import json

import anyio.to_thread
from litestar import Controller, Request, Response, get
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.adapters import service as adapters
from ..domain.adapters.caching import fixed_ref
from ..domain.adapters.downloads import count_download, serve_file
from ..domain.adapters.redaction import InputsView, inputs_view, withheld, withheld_message
from ..domain.adapters.rows import Adapter, AdapterVersion, File
from ..domain.auth.tokens import Principal
from ..errors import NotFound
from ..settings import Settings
from ..storage import BlobStore
from .cards import MAX_CARD_BYTES, model_card
from .pages import render

#: Text files larger than this are not shown inline (only downloaded).
MAX_VIEW_BYTES = 1 * 2**20


async def _find(db: AsyncSession, viewer: Principal, ns: str, name: str, ref: str,
                filename: str) -> tuple[Adapter, AdapterVersion, File, InputsView]:
    adapter = await adapters.get_adapter(db, viewer, ns, name)
    version = await adapters.resolve_version(db, adapter, ref)
    f = next((f for f in version.files if f.filename == filename), None)
    if f is None:
        raise NotFound(f"{ns}/{name}@{version.version} has no file {filename!r}")
    view = await inputs_view(db, viewer, [version])
    if filename in withheld(version, view):  # it names inputs this viewer cannot read
        raise NotFound(withheld_message(f"{ns}/{name}", version.version, filename))
    return adapter, version, f, view


class FilePages(Controller):
    """``/adapters/{ns}/{name}/versions/{ref}/files/…`` (download) and ``…/view/…`` (read inline)."""

    include_in_schema = False

    @get("/adapters/{ns:str}/{name:str}/versions/{ref:str}/files/{filename:str}")
    async def download(self, request: Request, ns: str, name: str, ref: str, filename: str, db: AsyncSession,
                       viewer: Principal, store: BlobStore, settings: Settings) -> Response:
        """The file's bytes (Range supported; on S3 a redirect to a short-lived URL), as the API serves them."""
        adapter, _, f, view = await _find(db, viewer, ns, name, ref, filename)
        private, adapter_id = adapter.visibility != "public" or not view.all_public, adapter.id
        db.expunge_all()
        await db.rollback()  # give the connection back before a long download
        await count_download(request.app.state.sessionmaker, adapter_id, f, request.headers.get("range"),
                             request.method)
        redirect = settings.redirect_downloads and settings.uses_s3
        response = await serve_file(store, f, request.headers.get("range"), redirect=redirect,
                                    expires=settings.presign_expires_s, public=not private, fixed=fixed_ref(ref),
                                    if_none_match=request.headers.get("if-none-match"))
        if private:  # answered because of this browser's sign-in: no shared cache may keep it
            response.set_header("Cache-Control", "private, no-store")
            response.set_header("Vary", "Cookie")
        return response

    @get("/adapters/{ns:str}/{name:str}/versions/{ref:str}/view/{filename:str}")
    async def view(self, request: Request, ns: str, name: str, ref: str, filename: str, db: AsyncSession,
                   viewer: Principal, store: BlobStore) -> Template:
        """A config pretty-printed, a README as its card next to its source, other files described."""
        adapter, version, f, _ = await _find(db, viewer, ns, name, ref, filename)
        text: str | None = None
        card = None
        if f.filename.endswith((".json", ".md", ".txt")) and f.size <= MAX_VIEW_BYTES:
            data = await store.read_range(f.storage_key, 0, f.size)
            text = data.decode("utf-8", errors="replace")
            if f.filename.endswith(".json"):
                try:
                    text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
                except ValueError:
                    pass  # shown as stored
            elif f.filename.endswith(".md"):
                card = await anyio.to_thread.run_sync(model_card, data[: MAX_CARD_BYTES + 1])
        full = f"{adapter.namespace}/{adapter.name}"
        response = render(request, viewer, "file.html", adapter=adapter, full_name=full, version=version, file=f,
                          text=text, card=card,
                          download_url=f"/adapters/{full}/versions/{version.version}/files/{f.filename}")
        if adapter.visibility != "public":
            response.set_header("Cache-Control", "private, no-store")
        return response


__all__ = ["FilePages"]
