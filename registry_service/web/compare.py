"""The page comparing two adapter versions: configs side by side (the keys that differ), metrics,
parameters, dataset, size, rank and targets. Reads through the same domain service as the API, with the
signed-in viewer, so a private version is as invisible here as anywhere."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.adapters import service as adapters
from ..domain.adapters.rows import Adapter, AdapterVersion
from ..domain.auth.tokens import Principal
from ..errors import BadRequest
from ..names import split_name
from .pages import render

#: The most config keys listed (a config is small; this only bounds a hostile one).
MAX_KEYS = 200


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[tuple[str, Any, Any]], int]:
    """Keys whose values differ, ``(key, a's value, b's value)`` (a missing key shows as None), and how
    many keys are the same."""
    keys = sorted(set(a) | set(b))[:MAX_KEYS]
    differ = [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]
    return differ, len(keys) - len(differ)


def side(adapter: Adapter, version: AdapterVersion) -> dict[str, Any]:
    """What the page shows of one version."""
    summary = version.summary or {}
    record = version.provenance or {}
    return {
        "name": f"{adapter.namespace}/{adapter.name}", "version": version.version, "commit": version.commit,
        "created_at": version.created_at, "description": version.description,
        "size": sum(f.size for f in version.files), "r": summary.get("r"), "alpha": summary.get("lora_alpha"),
        "targets": summary.get("targets") or [], "modules": summary.get("modules"), "method": adapter.method,
        "metrics": record.get("metrics", {}), "params": record.get("params", {}), "dataset": record.get("dataset"),
    }


def rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every key of either mapping, with both values (None where one lacks it)."""
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))]


class ComparePages(Controller):
    """``/adapters/{ns}/{name}/compare?a=REF&b=REF`` (``b`` may name another adapter: ``ns/name@ref``)."""

    include_in_schema = False

    @get("/adapters/{ns:str}/{name:str}/compare")
    async def compare(self, request: Request, ns: str, name: str, db: AsyncSession, viewer: Principal,
                      a: str | None = None, b: str | None = None) -> Template:
        """Two versions side by side; ``a`` defaults to the one before ``b``, ``b`` to the latest."""
        adapter = await adapters.get_adapter(db, viewer, ns, name)
        other, b_ref = adapter, b
        if b and "@" in b:
            target, _, b_ref = b.partition("@")
            ons, oname = split_name(target, "adapter name")
            other = await adapters.get_adapter(db, viewer, ons, oname)
        right = await adapters.resolve_version(db, other, b_ref or None)
        if a:
            left = await adapters.resolve_version(db, adapter, a)
        elif other is adapter and right.version > 1:
            left = await adapters.resolve_version(db, adapter, right.version - 1)
        else:
            raise BadRequest("name the version to compare with: ?a=<version, alias or commit>")
        differ, same = config_diff(left.config or {}, right.config or {})
        one, two = side(adapter, left), side(other, right)
        return render(request, viewer, "compare.html", left=one, right=two, config_diff=differ, config_same=same,
                      metric_rows=rows(one["metrics"], two["metrics"]),
                      param_rows=rows(one["params"], two["params"]),
                      full_name=f"{adapter.namespace}/{adapter.name}")


__all__ = ["ComparePages", "config_diff"]
