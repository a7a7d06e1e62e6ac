"""HTTP routes: ``/api/v1/merge-jobs`` (queue, read, list, cancel) and the lineage of a version."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlalchemy.ext.asyncio import AsyncSession

from ...openapi import problems
from ...params import NamePart, Page
from ...settings import Settings
from ..adapters.controller import base_url
from ..adapters.service import get_adapter, resolve_version
from ..auth.guards import signed_in
from ..auth.tokens import Principal
from . import service
from .lineage import describe_lineage, lineage_of
from .schemas import LineageGraph, MergeJobInfo, MergeJobPage, MergeJobRequest

ROOT = "/api/v1/merge-jobs"


class MergeJobController(Controller):
    """``/api/v1/merge-jobs``"""

    path = ROOT
    tags = ["merge jobs"]

    @post("/", status_code=HTTP_202_ACCEPTED, guards=[signed_in], responses=problems(401, 403, 413, 422))
    async def create(self, data: MergeJobRequest, db: AsyncSession, principal: Principal, request: Request,
                     settings: Settings) -> Response[MergeJobInfo]:
        """Queue a merge: every check runs first (422 lists every problem); a worker runs it."""
        job = await service.submit(db, principal, data, settings)
        await db.commit()
        body = await service.describe(db, job, base_url(request, settings), principal)
        return Response(body, status_code=HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @get("/", responses=problems(401))
    async def list_jobs(self, db: AsyncSession, principal: Principal, request: Request, settings: Settings,
                        job_state: Annotated[str | None, Parameter(query="state")] = None,
                        namespace: str | None = None, page: Page = 1,
                        page_size: Annotated[int, Parameter(ge=1, le=200, description="items per page, 1..200")] = 50,
                        ) -> MergeJobPage:
        """Jobs the caller may see, newest first; filter by ``state`` and output ``namespace``."""
        size = min(max(page_size, 1), 200)
        rows, total = await service.list_jobs(db, principal, state=job_state, namespace=namespace, limit=size,
                                              offset=(max(page, 1) - 1) * size)
        root = base_url(request, settings)
        return {"items": [await service.describe(db, j, root, principal) for j in rows], "total": total, "page": page}

    @get("/{job_id:str}", responses=problems(401, 404))
    async def get_job(self, job_id: str, db: AsyncSession, principal: Principal, request: Request,
                      settings: Settings) -> MergeJobInfo:
        """One job: state, progress (0..1), error, result."""
        job = await service.get_job(db, principal, job_id)
        return await service.describe(db, job, base_url(request, settings), principal)

    @post("/{job_id:str}/cancel", status_code=200, guards=[signed_in], responses=problems(401, 403, 404, 409))
    async def cancel(self, job_id: str, db: AsyncSession, principal: Principal, request: Request,
                     settings: Settings) -> MergeJobInfo:
        """Cancel: a queued job at once, a running one at its next step (state stays 'running' until then)."""
        job = await service.cancel(db, principal, job_id)
        await db.commit()
        return await service.describe(db, job, base_url(request, settings), principal)


class LineageController(Controller):
    """``GET /api/v1/adapters/{ns}/{name}/versions/{ref}/lineage``"""

    path = "/api/v1/adapters"
    tags = ["adapters"]

    @get("/{ns:str}/{name:str}/versions/{ref:str}/lineage", responses=problems(401, 404))
    async def lineage(self, ns: NamePart, name: NamePart, ref: str, db: AsyncSession,
                      principal: Principal) -> LineageGraph:
        """The version and its ancestors as a graph: ``nodes`` (one per version) and ``edges`` (parent -> child,
        with the input's weight and parameters). Versions the caller cannot read appear without a name."""
        adapter = await get_adapter(db, principal, ns, name)
        version = await resolve_version(db, adapter, ref)
        return await describe_lineage(db, await lineage_of(db, principal, adapter, version), f"{ns}/{name}", version,
                                      principal)
