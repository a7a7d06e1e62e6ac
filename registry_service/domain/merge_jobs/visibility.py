"""The private-input rule of merge jobs, checked again when a job publishes.

Private inputs need a private output: an adapter output must be private, and a full-model output
(base models have no visibility) is refused. :func:`.service.submit` checks it when the job is
queued; :func:`recheck_private_inputs` checks it again inside the publishing transaction, with the
inputs' adapter rows share-locked, so a visibility change made while the job ran cannot slip through.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import Adapter
from ...errors import Conflict


class PrivateInputs(Conflict):
    """Publishing would break the private-input rule: the job fails with this message."""

    title, kind = "Private inputs need a private output", "private-inputs"


async def private_inputs(db: AsyncSession, inputs: list[dict[str, Any]]) -> list[str]:
    """``ns/name`` of the inputs whose adapter is private now (their rows share-locked until commit)."""
    names = sorted({str(e["adapter"]) for e in inputs})
    pairs = [n.split("/", 1) for n in names]
    rows = await db.execute(
        select(Adapter.namespace, Adapter.name, Adapter.visibility)
        .where(or_(*(and_(Adapter.namespace == ns, Adapter.name == name) for ns, name in pairs)))
        .with_for_update(read=True)
    )
    return sorted(f"{ns}/{name}" for ns, name, visibility in rows if visibility != "public")


async def recheck_private_inputs(db: AsyncSession, job_inputs: list[dict[str, Any]], output: dict[str, Any]) -> None:
    """Raise :class:`PrivateInputs` when the job's output would be public while an input is private now."""
    secret = await private_inputs(db, job_inputs)
    if not secret:
        return
    full = str(output["name"])
    if output.get("kind") == "model":
        raise PrivateInputs(f"inputs {secret} are private now, and a merged model is public (base models have no "
                            f"visibility); {full} was not published")
    ns, name = full.split("/", 1)
    current = (await db.execute(select(Adapter.visibility).where(Adapter.namespace == ns, Adapter.name == name)
                                .with_for_update())).scalar_one_or_none()
    private_out = current == "private" if current is not None else bool(output.get("private"))
    if not private_out:
        raise PrivateInputs(f"inputs {secret} are private now (made private after the job was submitted), and the "
                            f"output adapter {full} is public; nothing was published. Make {full} private "
                            "(PATCH, a namespace admin) and submit the merge again")


__all__ = ["PrivateInputs", "private_inputs", "recheck_private_inputs"]
