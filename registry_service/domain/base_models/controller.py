"""HTTP routes for base models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Controller, Response, get, post
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from ..adapters.service import describe_adapter, search
from ..auth.tokens import Principal
from . import service


@dataclass
class RegisterBaseModel:
    """Register by ``signature`` (from ``sdk.signature``) or by ``config`` (a ``config.json``)."""

    name: str
    revision: str | None = None
    signature: dict[str, Any] | None = None
    config: dict[str, Any] | None = None


class BaseModelController(Controller):
    """``/api/v1/base-models``"""

    path = "/api/v1/base-models"
    tags = ["base models"]

    @post("/")
    async def register(self, data: RegisterBaseModel, db: AsyncSession, principal: Principal) -> Response[dict]:
        """Register a base model (idempotent for the same signature)."""
        row, created = await service.register(
            db, principal, data.name, revision=data.revision, signature=data.signature, config=data.config
        )
        await db.commit()
        return Response(service.describe(row), status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @get("/")
    async def list_base_models(self, db: AsyncSession, q: str | None = None, page: int = 1) -> dict:
        """Base models, optionally filtered by text."""
        rows = await service.search(db, q, limit=50, offset=(max(page, 1) - 1) * 50)
        return {"items": [service.describe(r) for r in rows], "page": page}

    @get("/{ns:str}/{name:str}")
    async def get_base_model(self, ns: str, name: str, db: AsyncSession) -> dict:
        """A base model with its full signature."""
        row = await service.get(db, f"{ns}/{name}")
        return service.describe(row, with_signature=True)

    @get("/{ns:str}/{name:str}/adapters")
    async def compatible_adapters(
        self, ns: str, name: str, db: AsyncSession, principal: Principal, page: int = 1
    ) -> dict:
        """Adapters that fit this base model: any adapter whose base model has the same fingerprint."""
        row = await service.get(db, f"{ns}/{name}")
        items, total = await search(db, principal, fingerprint=row.fingerprint, page=page)
        return {"items": [describe_adapter(a) for a in items], "total": total, "page": page,
                "fingerprint": row.fingerprint}
