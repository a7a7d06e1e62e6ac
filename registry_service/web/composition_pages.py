"""The composition page: a version's routing, its pinned members, and the lineage edges from each member.

Reads go through :mod:`registry_service.domain.compositions.service` with the signed-in viewer, like the
JSON API: a composition whose members the viewer cannot all read is not found.
"""

from __future__ import annotations

from litestar import Controller, Request, get
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.auth.tokens import Principal
from ..domain.compositions import service as compositions
from .pages import render


class CompositionPages(Controller):
    """``/compositions/{ns}/{name}[/versions/{ref}]``"""

    include_in_schema = False

    @get(["/compositions/{ns:str}/{name:str}", "/compositions/{ns:str}/{name:str}/versions/{ref:str}"])
    async def composition_page(self, request: Request, ns: str, name: str, db: AsyncSession, viewer: Principal,
                               ref: str | None = None) -> Template:
        """A composition version: routing, members (linked), edges member → composition, other versions."""
        comp = await compositions.get_composition(db, viewer, ns, name)
        version = await compositions.resolve_version(db, comp, ref)
        await compositions.require_members_readable(db, viewer, comp, version)
        return render(request, viewer, "composition.html", comp=comp, full_name=f"{ns}/{name}",
                      version=compositions.describe_version(comp, version),
                      aliases=await compositions.aliases_of(db, comp),
                      versions=[v.version for v in await compositions.versions_of(db, comp, limit=50)])
