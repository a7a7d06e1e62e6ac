"""``adapters ls`` says how many adapters match: exactly when the service counted them all, "N or more"
when it stopped counting at its bound (``total_exact`` false), and nothing when the page holds them all.

The registry here is a scripted HTTP server (:class:`test_client_hostile_server.Hostile`) answering the
search with what the service answers in each case."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from test_client_hostile_server import TOKEN, Hostile
from typer.testing import CliRunner

from sdk.cli import app

SEARCH = "/api/v1/adapters"


@pytest.fixture
def registry() -> Iterator[Hostile]:
    srv = Hostile()
    yield srv
    srv.close()


def page(n: int, total: int | None, exact: bool, more: bool) -> dict[str, Any]:
    """A search answer of ``n`` adapters, as the service gives it."""
    items = [{"name": f"ns/a{i}", "base_model": "org/base", "method": "LORA", "versions": 1, "tags": ["chat"],
              "description": f"adapter {i}"} for i in range(n)]
    return {"items": items, "total": total, "total_exact": exact, "page": 1, "has_more": more,
            "next_cursor": "c" if more else None}


def ls(registry: Hostile, tmp_path: Path, *extra: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["--url", registry.url, "--token", TOKEN, "--cache-dir", str(tmp_path / "cache"),
                                      "ls", *extra])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def test_a_capped_count_is_shown_as_n_or_more(registry: Hostile, tmp_path: Path) -> None:
    registry.json("GET", SEARCH, page(20, 1000, exact=False, more=True))
    out, err = ls(registry, tmp_path, "-q", "chat")
    assert "ns/a19" in out
    assert "page 1: 20 of 1000 or more adapters (--page 2 for more)" in err
    query = parse_qs(urlsplit(registry.seen[-1].path).query)
    assert query["count"] == ["true"] and query["q"] == ["chat"]  # the CLI asks the service to count


def test_an_exact_count_is_shown_as_is(registry: Hostile, tmp_path: Path) -> None:
    registry.json("GET", SEARCH, page(20, 57, exact=True, more=True))
    _, err = ls(registry, tmp_path)
    assert "page 1: 20 of 57 adapters (--page 2 for more)" in err
    assert "57 or more" not in err


def test_a_page_holding_every_match_says_nothing_more(registry: Hostile, tmp_path: Path) -> None:
    registry.json("GET", SEARCH, page(3, 3, exact=True, more=False))
    out, err = ls(registry, tmp_path)
    assert "ns/a2" in out
    assert "page" not in err and "of 3" not in err
