"""Reading compositions: visibility (their own, and every member's), version references, search, JSON forms."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from sdk.tuners.poly.skills import ROUTER_FILE

from ...db.models import Adapter, BaseModel, Composition, CompositionAlias, CompositionVersion
from ...errors import NotFound
from ..adapters.service import describe_named, find_version, get_named
from ..adapters.service import visible as adapter_visible
from ..auth.tokens import Principal

ROOT = "/api/v1/compositions"
PROTOTYPES_FILE = "arrow_prototypes.safetensors"
#: The stored file of a version, by routing kind (Arrow's prototypes, or a learned router's weights).
FILE_BY_KIND = {"arrow": PROTOTYPES_FILE, "router": ROUTER_FILE}


def visible(principal: Principal) -> ColumnElement[bool]:
    """SQL condition: compositions the caller may see."""
    return adapter_visible(principal, Composition)


async def get_composition(db: AsyncSession, principal: Principal, ns: str, name: str, *, lock: bool = False
                          ) -> Composition:
    """The composition ``ns/name``; 404 when missing or private to someone else."""
    return await get_named(db, principal, Composition, "composition", ns, name, lock=lock)


async def resolve_version(db: AsyncSession, comp: Composition, ref: str | None) -> CompositionVersion:
    """A version by number, alias (``latest`` when ``ref`` is None) or 40-hex commit."""
    return await find_version(db, ref, f"{comp.namespace}/{comp.name}", CompositionVersion, CompositionAlias,
                              "composition_id", comp.id)


async def require_members_readable(db: AsyncSession, principal: Principal, comp: Composition,
                                   version: CompositionVersion) -> bool:
    """404 (as if the composition were absent) when the caller cannot read every member now: a member made
    private later must not show through a composition. Returns whether the composition and every member are
    public now (only then may a shared cache keep an answer about it)."""
    names = {tuple(m["adapter"].split("/", 1)) for m in version.members}
    cond = or_(*[and_(Adapter.namespace == ns, Adapter.name == n) for ns, n in names])
    readable, public = (await db.execute(
        select(func.count(), func.count().filter(Adapter.visibility == "public")).select_from(Adapter)
        .where(cond, adapter_visible(principal)))).one()
    if readable != len(names):
        raise NotFound(f"composition {comp.namespace}/{comp.name} not found")
    return comp.visibility == "public" and public == len(names)


async def aliases_of(db: AsyncSession, comp: Composition) -> dict[str, int]:
    """Alias name -> version number."""
    rows = await db.execute(
        select(CompositionAlias.name, CompositionVersion.version)
        .join(CompositionVersion, CompositionVersion.id == CompositionAlias.version_id)
        .where(CompositionAlias.composition_id == comp.id).order_by(CompositionAlias.name))
    return {name: version for name, version in rows}


async def latest_routing(db: AsyncSession, comp: Composition) -> str:
    """The routing kind of the newest version."""
    row = (await db.execute(select(CompositionVersion.routing).where(CompositionVersion.composition_id == comp.id)
                            .order_by(CompositionVersion.version.desc()).limit(1))).scalar_one_or_none()
    return str((row or {}).get("kind", ""))


async def versions_of(db: AsyncSession, comp: Composition, limit: int = 100) -> list[CompositionVersion]:
    """The newest versions first."""
    return list((await db.execute(select(CompositionVersion).where(CompositionVersion.composition_id == comp.id)
                                  .order_by(CompositionVersion.version.desc()).limit(limit))).scalars())


async def search(db: AsyncSession, principal: Principal, *, base_model: str | None = None, q: str | None = None,
                 page: int = 1, page_size: int = 20) -> tuple[list[Composition], int]:
    """Compositions matching the filters, newest first, with the total count."""
    stmt = select(Composition).join(BaseModel, BaseModel.id == Composition.base_model_id).where(visible(principal))
    if base_model:
        ns, _, name = base_model.partition("/")
        stmt = stmt.where(BaseModel.namespace == ns, BaseModel.name == name)
    if q:
        like = f"%{q}%"
        stmt = stmt.where(or_(Composition.name.ilike(like), Composition.namespace.ilike(like),
                              Composition.description.ilike(like)))
    total = (await db.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = (await db.execute(stmt.order_by(Composition.updated_at.desc(), Composition.id.desc())
                             .limit(page_size).offset((max(page, 1) - 1) * page_size))).unique().scalars()
    return list(rows), total


def describe_composition(row: Composition, aliases: dict[str, int] | None = None, routing: str | None = None
                         ) -> dict[str, Any]:
    """The JSON form of a composition."""
    out = describe_named(row, aliases)
    if routing is not None:
        out["routing"] = routing
    return out


def stored_file_name(v: CompositionVersion) -> str | None:
    """The name of the file stored with version ``v`` (None when it has none)."""
    if v.prototypes_sha256 is None:
        return None
    return FILE_BY_KIND.get(v.routing.get("kind", ""), PROTOTYPES_FILE)


def describe_version(comp: Composition, v: CompositionVersion, base_url: str = "") -> dict[str, Any]:
    """The JSON form of a version, with its stored file (Arrow prototypes, router weights) and download URL."""
    files = []
    filename = stored_file_name(v)
    if filename is not None:
        url = f"{base_url}{ROOT}/{comp.namespace}/{comp.name}/versions/{v.version}/files/{filename}"
        files.append({"filename": filename, "size": v.prototypes_size, "sha256": v.prototypes_sha256, "url": url})
    return {
        "composition": f"{comp.namespace}/{comp.name}",
        "version": v.version,
        "commit": v.commit,
        "base_model": f"{comp.base_model.namespace}/{comp.base_model.name}",
        "members": v.members,
        "routing": v.routing,
        "files": files,
        "created_by": v.created_by,
        "created_at": v.created_at.isoformat() if v.created_at else None,
    }
