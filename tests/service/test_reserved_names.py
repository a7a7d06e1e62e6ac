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
