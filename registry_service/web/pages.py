"""The pages of the web UI: home, adapter list and search, adapter versions, base models, merge
jobs, and signing in. Server-rendered (Jinja, autoescaped); every page works without JavaScript.

Every read goes through the same domain services as the JSON API (``domain.adapters.service``,
``domain.base_models``, ``domain.merge_jobs``), with the signed-in viewer (cookie) in place of the
bearer token; the pages never query the database themselves.
"""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import quote

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from sdk.methods import method_name, registered_methods
from sdk.serving_compat import ENGINES, VLLM_MAX_LORA_RANKS

from ..domain.adapters import service as adapters
from ..domain.adapters.alias_history import recent_moves
from ..domain.adapters.redaction import inputs_view, withheld
from ..domain.adapters.validation import README_FILE
from ..domain.auth.tokens import Principal
from ..domain.base_models import service as base_models
from ..domain.base_models import weights
from ..domain.events.controller import adapter_activity
from ..domain.merge_jobs.lineage import lineage_of
from ..errors import BadRequest, Unauthorized
from ..names import check_part
from ..params import Page
from ..settings import Settings
from ..storage import BlobStore
from .cards import MAX_CARD_BYTES, ModelCard, model_card
from .lineage import layout
from .session import check_token, clear_token_cookie, stale_cookie
from .session import sign_in as open_session
from .session import sign_out as end_session
from .views import list_url, page_numbers, public_root, snippets, summarize_signature

PAGE_SIZE = 20
MAX_VERSIONS_SHOWN = 100
#: How the adapter list can be sorted: query value -> label.
SORTS = {"updated": "recently updated", "name": "name", "downloads": "most downloaded", "created": "newest"}


def render(request: Request, viewer: Principal | None, template: str, *, status: int = 200, **context: Any) -> Template:
    """A page; also clears a sign-in cookie whose token stopped working."""
    response = Template(template, status_code=status, context={"viewer": viewer, "path": request.url.path, **context})
    if stale_cookie(request):
        clear_token_cookie(response)
    return response


def _pages(total: int) -> int:
    return max(1, math.ceil(total / PAGE_SIZE))


def _paging(here: str, filters: dict[str, Any], page: int, total: int) -> dict[str, Any]:
    """The pager's context: numbered links that keep ``filters``, and whether ``page`` is past the end."""
    pages = _pages(total)
    return {"page": page, "pages": pages, "out_of_range": page > pages,
            "page_links": [(n, list_url(here, filters, page=n) if n else None) for n in page_numbers(page, pages)],
            "prev_url": list_url(here, filters, page=min(page - 1, pages)) if page > 1 else None,
            "next_url": list_url(here, filters, page=page + 1) if page < pages else None,
            "last_url": list_url(here, filters, page=pages)}


async def read_card(store: BlobStore, version: Any) -> ModelCard | None:
    """The model card of a version with a README (rendered off the event loop; cached by content)."""
    readme = next((f for f in version.files if f.filename == README_FILE), None)
    if readme is None:
        return None
    data = await store.read_range(readme.storage_key, 0, min(readme.size, MAX_CARD_BYTES + 1))
    return await anyio.to_thread.run_sync(model_card, data)


def _safe_next(target: str | None) -> str:
    """Only same-site paths are followed after signing in."""
    if (not target or not target.startswith("/") or target.startswith("//") or "\\" in target
            or any(ord(c) < 32 or ord(c) == 127 for c in target)):  # a header cannot carry control characters
        return "/"
    return "".join(c if c.isascii() else quote(c) for c in target)  # a Location header is ASCII


class PageController(Controller):
    """Browsing adapters and base models."""

    include_in_schema = False

    @get("/")
    async def home(self, request: Request, db: AsyncSession, viewer: Principal) -> Template:
        """Search box, the newest adapters, and the base models."""
        recent, total = await adapters.search(db, viewer, page_size=8)
        bases = await base_models.search(db, None, limit=12)
        return render(request, viewer, "home.html", recent=recent, total=total, bases=bases)

    @get("/adapters")
    async def adapter_list(self, request: Request, db: AsyncSession, viewer: Principal, q: str | None = None,
                           base_model: str | None = None, method: str | None = None, tag: str | None = None,
                           sort: str | None = None, page: Page = 1, serves: str | None = None,
                           max_lora_rank: str | None = None) -> Template:
        """Adapters filtered by text, base model (by its signature, like the base model's page), method,
        tag and serving engine, sorted, a page at a time."""
        return await self._list(request, db, viewer, "/adapters", None, q, base_model, method, tag, sort, page,
                                serves, max_lora_rank)

    @get("/adapters/{ns:str}")
    async def namespace_page(self, request: Request, ns: str, db: AsyncSession, viewer: Principal,
                             q: str | None = None, base_model: str | None = None, method: str | None = None,
                             tag: str | None = None, sort: str | None = None, page: Page = 1,
                             serves: str | None = None, max_lora_rank: str | None = None) -> Template:
        """The adapters of one namespace (its private ones too, for a reader of the namespace)."""
        check_part(ns, "namespace")
        return await self._list(request, db, viewer, f"/adapters/{ns}", ns, q, base_model, method, tag, sort, page,
                                serves, max_lora_rank)

    async def _list(self, request: Request, db: AsyncSession, viewer: Principal, here: str, ns: str | None,
                    q: str | None, base_model: str | None, method: str | None, tag: str | None, sort: str | None,
                    page: int, serves: str | None = None, max_lora_rank: str | None = None) -> Template:
        rank = (max_lora_rank or "").strip()
        filters = {"q": " ".join(adapters.search_words(q)), "base_model": (base_model or "").strip(),
                   "method": (method or "").strip().upper(), "tag": (tag or "").strip(),
                   "sort": sort if sort in SORTS and sort != "updated" else "",
                   "serves": serves if serves in ENGINES else "",
                   "max_lora_rank": rank if rank.isdigit() and len(rank) < 10 else ""}
        page = max(page, 1)
        fingerprint, unknown_base = None, False
        if filters["base_model"]:  # follow the signature: adapters pushed under another name of it fit too
            try:
                row = await base_models.get(db, filters["base_model"], missing_ok=True)
            except BadRequest:
                row = None
            fingerprint, unknown_base = (row.fingerprint, False) if row is not None else (None, True)
        items: list[Any] = []
        total = 0
        if not unknown_base:
            items, total = await adapters.search(db, viewer, fingerprint=fingerprint,
                                                 method=filters["method"] or None, tag=filters["tag"] or None,
                                                 q=filters["q"] or None, page=page, page_size=PAGE_SIZE,
                                                 namespace=ns, sort=filters["sort"] or "updated",
                                                 serves=filters["serves"] or None,
                                                 max_lora_rank=int(filters["max_lora_rank"])
                                                 if filters["max_lora_rank"] else None)
        bases = await base_models.search(db, None, limit=200)
        methods = [(m, method_name(m)) for m in registered_methods()]
        return render(request, viewer, "adapters.html", items=items, total=total, filters=filters, bases=bases,
                      methods=methods, sorts=SORTS, engines=ENGINES, lora_ranks=VLLM_MAX_LORA_RANKS,
                      here=here, namespace=ns, unknown_base=unknown_base,
                      q=filters["q"], **_paging(here, filters, page, total))

    @get("/adapters/{ns:str}/{name:str}")
    async def adapter_page(self, request: Request, ns: str, name: str, db: AsyncSession, viewer: Principal,
                           settings: Settings, store: BlobStore) -> Template:
        """The adapter at its latest version."""
        return await self._version_page(request, ns, name, None, db, viewer, settings, store)

    @get("/adapters/{ns:str}/{name:str}/versions/{ref:str}")
    async def version_page(self, request: Request, ns: str, name: str, ref: str, db: AsyncSession,
                           viewer: Principal, settings: Settings, store: BlobStore) -> Template:
        """One version, by number, alias or commit."""
        return await self._version_page(request, ns, name, ref, db, viewer, settings, store)

    async def _version_page(self, request: Request, ns: str, name: str, ref: str | None, db: AsyncSession,
                            viewer: Principal, settings: Settings, store: BlobStore) -> Template:
        adapter = await adapters.get_adapter(db, viewer, ns, name)
        version = await adapters.resolve_version(db, adapter, ref)
        aliases = await adapters.aliases_of(db, adapter)
        versions = await adapters.versions_of(db, adapter, limit=MAX_VERSIONS_SHOWN)
        by_version: dict[int, list[str]] = {}
        for alias, number in aliases.items():
            by_version.setdefault(number, []).append(alias)
        base = adapter.base_model
        same_signature = await base_models.same_signature(db, base)
        recorded = (version.summary or {}).get("base_fingerprint")
        lineage = await lineage_of(db, viewer, adapter, version)
        hidden = withheld(version, await inputs_view(db, viewer, [version]))  # files naming unreadable inputs
        full = f"{adapter.namespace}/{adapter.name}"
        own_aliases = [a for a in by_version.get(version.version, []) if a != "latest"]
        card = None if README_FILE in hidden else await read_card(store, version)
        return render(
            request, viewer, "adapter.html", adapter=adapter, full_name=full, version=version, versions=versions,
            aliases=aliases, aliases_by_version=by_version, latest=aliases.get("latest", adapter.next_version - 1),
            base=base, activity=await adapter_activity(db, viewer, ns, name),
            can_write=viewer.can_write(ns), can_admin=viewer.can_admin(ns),
            same_signature=same_signature, fits=recorded in (None, base.fingerprint),
            recorded_fingerprint=recorded, lineage=lineage, drawing=layout(lineage), card=card,
            method_label=method_name(adapter.method, version.config),
            snippets=snippets(public_root(request, settings), full, version.version,
                              private=adapter.visibility != "public", base_model=f"{base.namespace}/{base.name}",
                              architecture=base.architecture, alias=own_aliases[0] if own_aliases else None),
            files_url=f"/adapters/{full}/versions/{version.version}/files",
            version_size=sum(f.size for f in version.files), withheld=hidden,
            serving=adapters.serving_of(version), alias_moves=await recent_moves(db, adapter.id),
            base_license_restrictive=settings.restrictive(base.license),
        )

    @get("/base-models")
    async def base_model_list(self, request: Request, db: AsyncSession, viewer: Principal, q: str | None = None,
                              page: Page = 1) -> Template:
        """Registered base models."""
        page = max(page, 1)
        rows = await base_models.search(db, (q or "").strip() or None, limit=PAGE_SIZE + 1,
                                        offset=(page - 1) * PAGE_SIZE)
        filters = {"q": (q or "").strip()}
        return render(request, viewer, "base_models.html", items=rows[:PAGE_SIZE], filters=filters, page=page,
                      prev_url=list_url("/base-models", filters, page=page - 1) if page > 1 else None,
                      next_url=list_url("/base-models", filters, page=page + 1) if len(rows) > PAGE_SIZE else None)

    @get("/base-models/{ns:str}/{name:str}")
    async def base_model_page(self, request: Request, ns: str, name: str, db: AsyncSession, viewer: Principal,
                              page: Page = 1) -> Template:
        """A base model: its signature in brief, its weights, and the adapters that fit it."""
        row = await base_models.get(db, f"{ns}/{name}")
        assert row is not None
        files = (await weights.files_of(db, [row.id]))[row.id]
        page = max(page, 1)
        compatible, total = await adapters.search(db, viewer, fingerprint=row.fingerprint, page=page,
                                                  page_size=PAGE_SIZE)
        here = f"/base-models/{ns}/{name}"
        return render(request, viewer, "base_model.html", base=row, files=files,
                      signature=summarize_signature(row.signature), compatible=compatible, total=total,
                      **_paging(here, {}, page, total))


class SignInPages(Controller):
    """Signing in with an API token (a server-side session, its id in an HttpOnly cookie) and out again."""

    include_in_schema = False

    @get("/sign-in")
    async def sign_in_form(self, request: Request, viewer: Principal,
                           next_page: Annotated[str | None, Parameter(query="next")] = None) -> Template:
        """The token form."""
        return render(request, viewer, "sign_in.html", next=_safe_next(next_page), error=None)

    @post("/sign-in", status_code=303)
    async def sign_in(self, request: Request, db: AsyncSession, settings: Settings) -> Response:
        """Check the token like the API does; on success open a session (its id in a cookie) and go back."""
        form = await request.form()
        target = _safe_next(form.get("next"))
        try:
            principal = await check_token(db, str(form.get("token") or ""))
        except Unauthorized as exc:
            await db.rollback()
            return render(request, None, "sign_in.html", status=401, next=target, error=str(exc.detail))
        response: Response = Redirect(target, status_code=303)
        await open_session(db, request, settings, principal, response)
        await db.commit()
        return response

    @post("/sign-out", status_code=303)
    async def sign_out(self, request: Request, db: AsyncSession) -> Response:
        """End the session."""
        response: Response = Redirect("/", status_code=303)
        await end_session(db, request, response)
        await db.commit()
        return response


__all__ = ["PageController", "SignInPages", "render"]
