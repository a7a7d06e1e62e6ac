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

from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from sdk.methods import registered_methods

from ..domain.adapters import service as adapters
from ..domain.adapters.redaction import inputs_view, withheld
from ..domain.auth.tokens import Principal
from ..domain.base_models import service as base_models
from ..domain.base_models import weights
from ..domain.merge_jobs import service as merge_jobs
from ..domain.merge_jobs.lineage import lineage_of
from ..errors import NotFound, Unauthorized
from ..params import Page
from ..settings import Settings
from .lineage import layout
from .session import check_token, clear_token_cookie, stale_cookie
from .session import sign_in as open_session
from .session import sign_out as end_session
from .views import list_url, public_root, snippets, summarize_signature

PAGE_SIZE = 20
MAX_VERSIONS_SHOWN = 100


def render(request: Request, viewer: Principal | None, template: str, *, status: int = 200, **context: Any) -> Template:
    """A page; also clears a sign-in cookie whose token stopped working."""
    response = Template(template, status_code=status, context={"viewer": viewer, "path": request.url.path, **context})
    if stale_cookie(request):
        clear_token_cookie(response)
    return response


def _pages(total: int) -> int:
    return max(1, math.ceil(total / PAGE_SIZE))


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
                           page: Page = 1) -> Template:
        """Adapters filtered by text, base model, method and tag, a page at a time."""
        filters = {"q": (q or "").strip(), "base_model": base_model or "", "method": method or "",
                   "tag": (tag or "").strip()}
        page = max(page, 1)
        items, total = await adapters.search(db, viewer, base_model=filters["base_model"] or None,
                                             method=filters["method"] or None, tag=filters["tag"] or None,
                                             q=filters["q"] or None, page=page, page_size=PAGE_SIZE)
        bases = await base_models.search(db, None, limit=200)
        pages = _pages(total)
        return render(request, viewer, "adapters.html", items=items, total=total, page=page, pages=pages,
                      filters=filters, bases=bases, methods=registered_methods(),
                      prev_url=list_url("/adapters", filters, page=page - 1) if page > 1 else None,
                      next_url=list_url("/adapters", filters, page=page + 1) if page < pages else None,
                      q=filters["q"])

    @get("/adapters/{ns:str}/{name:str}")
    async def adapter_page(self, request: Request, ns: str, name: str, db: AsyncSession, viewer: Principal,
                           settings: Settings) -> Template:
        """The adapter at its latest version."""
        return await self._version_page(request, ns, name, None, db, viewer, settings)

    @get("/adapters/{ns:str}/{name:str}/versions/{ref:str}")
    async def version_page(self, request: Request, ns: str, name: str, ref: str, db: AsyncSession,
                           viewer: Principal, settings: Settings) -> Template:
        """One version, by number, alias or commit."""
        return await self._version_page(request, ns, name, ref, db, viewer, settings)

    async def _version_page(self, request: Request, ns: str, name: str, ref: str | None, db: AsyncSession,
                            viewer: Principal, settings: Settings) -> Template:
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
        return render(
            request, viewer, "adapter.html", adapter=adapter, full_name=full, version=version, versions=versions,
            aliases=aliases, aliases_by_version=by_version, latest=adapter.next_version - 1, base=base,
            same_signature=same_signature, fits=recorded in (None, base.fingerprint),
            recorded_fingerprint=recorded, lineage=lineage, drawing=layout(lineage),
            snippets=snippets(public_root(request, settings), full, version.version,
                              private=adapter.visibility != "public"),
            api_files=f"/api/v1/adapters/{full}/versions/{version.version}/files",
            version_size=sum(f.size for f in version.files), withheld=hidden,
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
        pages = _pages(total)
        here = f"/base-models/{ns}/{name}"
        return render(request, viewer, "base_model.html", base=row, files=files,
                      signature=summarize_signature(row.signature), compatible=compatible, total=total,
                      page=page, pages=pages,
                      prev_url=list_url(here, {}, page=page - 1) if page > 1 else None,
                      next_url=list_url(here, {}, page=page + 1) if page < pages else None)


class JobPages(Controller):
    """Merge jobs and their progress (the page refreshes itself while a job is active)."""

    include_in_schema = False

    @get("/jobs")
    async def job_list(self, request: Request, db: AsyncSession, viewer: Principal) -> Template:
        """The newest merge jobs."""
        items = await merge_jobs.list_views(db, viewer)
        return render(request, viewer, "jobs.html", jobs=items, refresh=any(j.active for j in items))

    @get("/jobs/{job_id:str}")
    async def job_page(self, request: Request, job_id: str, db: AsyncSession, viewer: Principal) -> Template:
        """One merge job."""
        job = await merge_jobs.find_view(db, viewer, job_id)
        if job is None:
            raise NotFound(f"merge job {job_id!r} not found")
        return render(request, viewer, "job.html", job=job, refresh=job.active)


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


__all__ = ["JobPages", "PageController", "SignInPages"]
