"""Namespaces that would shadow the service's own top-level routes are refused."""

from __future__ import annotations

import pytest

from registry_service.app import create_app
from registry_service.errors import BadRequest
from registry_service.names import RESERVED_NAMESPACES, check_part, split_name
from registry_service.settings import Settings


def test_every_top_level_route_segment_is_a_reserved_namespace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = create_app(Settings(data_dir=tmp_path, database_url="postgresql://unused/none", apply_migrations=False))
    firsts = set()
    for route in app.routes:
        first = route.path.strip("/").split("/", 1)[0]
        if first and not first.startswith("{"):
            firsts.add(first)
    assert firsts, "no routes found"
    assert firsts <= RESERVED_NAMESPACES, f"not reserved: {sorted(firsts - RESERVED_NAMESPACES)}"


@pytest.mark.parametrize("ns", sorted(RESERVED_NAMESPACES))
def test_reserved_namespaces_are_refused_with_a_clear_message(ns: str) -> None:
    with pytest.raises(BadRequest, match="reserved"):
        check_part(ns, "namespace")
    with pytest.raises(BadRequest, match="reserved"):
        split_name(f"{ns.upper()}/model")
    assert check_part(ns, "adapter name") == ns  # only namespaces clash with routes


@pytest.mark.parametrize("registry", ["local"], indirect=True)
async def test_names_and_aliases_with_a_trailing_newline_are_refused(registry) -> None:  # type: ignore[no-untyped-def]
    """``$`` also matches before a final newline; the grammar is anchored with ``\\Z``, on every route."""
    auth = registry.auth(registry.admin)
    r = await registry.client.post("/api/v1/tokens", json={"namespace": "alice\n", "scopes": ["read"]}, headers=auth)
    assert r.status_code == 400 and "invalid namespace 'alice\\n'" in r.json()["detail"], r.text
    r = await registry.client.get("/api/v1/adapters/alice/x%0A", headers=auth)
    assert r.status_code == 400 and "invalid adapter name 'x\\n'" in r.json()["detail"], r.text
    r = await registry.client.put("/api/v1/adapters/alice/x/aliases/prod%0A", json={"version": 1}, headers=auth)
    assert r.status_code == 400 and "invalid alias 'prod\\n'" in r.json()["detail"], r.text
