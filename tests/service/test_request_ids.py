"""Request ids (``X-Request-ID``) on every response and in the logs, and the 500 that remains for a
bug: logged at ERROR with its traceback and the request id, answered without internals."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from registry_testkit import Registry

from registry_service.domain.adapters import search
from registry_service.domain.adapters import service as adapters
from registry_service.request_ids import RequestIdFilter, current_request_id

HEX32 = re.compile(r"[0-9a-f]{32}")


async def test_every_response_carries_a_request_id(local_registry: Registry) -> None:
    client = local_registry.client
    made = [(await client.get(path)).headers["x-request-id"] for path in ("/api/v1/health", "/api/v1/health",
                                                                          "/no/such/page", "/api/v1/nothing")]
    assert all(HEX32.fullmatch(i) for i in made) and len(set(made)) == len(made)
    kept = "proxy-7f3a.1:2+b/c=="
    assert (await client.get("/api/v1/health", headers={"X-Request-ID": kept})).headers["x-request-id"] == kept
    for bad in ("two words", "x" * 129, "<script>", "caf\u00e9"):
        got = await client.get("/api/v1/health", headers={"X-Request-ID": bad.encode()})
        assert HEX32.fullmatch(got.headers["x-request-id"]), bad
        assert got.headers.get_list("x-request-id") == [got.headers["x-request-id"]]


async def test_an_unexpected_error_is_logged_with_traceback_and_request_id(
        local_registry: Registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    boom = RuntimeError("boom: secret internals at /srv/registry")

    async def broken_search(*args: Any, **kwargs: Any) -> Any:
        raise boom

    monkeypatch.setattr(adapters, "search", broken_search)  # the page's search
    monkeypatch.setattr(search, "search_adapters", broken_search)  # the API's
    caplog.set_level(logging.ERROR, logger="adapter_registry")
    for path, accept, request_id in [("/api/v1/adapters", "application/json", "api-500"),
                                     ("/adapters", "text/html", "page-500")]:
        caplog.clear()
        r = await local_registry.client.get(path, headers={"X-Request-ID": request_id, "Accept": accept})
        assert r.status_code == 500
        assert r.headers["x-request-id"] == request_id
        assert "secret internals" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
        if accept == "text/html":
            assert r.headers["content-type"].startswith("text/html") and request_id in r.text
        else:
            assert r.headers["content-type"].startswith("application/problem+json")
            body = r.json()
            assert body["status"] == 500 and body["request_id"] == request_id
        logged = [rec for rec in caplog.records if rec.levelno == logging.ERROR and rec.exc_info
                  and rec.exc_info[1] is boom and rec.name.startswith("adapter_registry")]
        assert len(logged) == 1, [rec.getMessage() for rec in caplog.records]
        assert logged[0].request_id == request_id and path in logged[0].getMessage()  # type: ignore[attr-defined]
        assert "broken_search" in caplog.text  # the traceback is in the log


async def test_log_records_carry_the_request_id(local_registry: Registry, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str | None] = []

    async def logging_search(*args: Any, **kwargs: Any) -> Any:
        seen.append(current_request_id())
        logging.getLogger("adapter_registry.test").warning("searching")
        return search.SearchPage([], 0, True, False, None)

    monkeypatch.setattr(search, "search_adapters", logging_search)
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.WARNING, logger="adapter_registry.test")
    r = await local_registry.client.get("/api/v1/adapters", headers={"X-Request-ID": "filter-1"})
    assert r.status_code == 200 and seen == ["filter-1"]
    logging.getLogger("adapter_registry.test").warning("between requests")
    by_message = {rec.getMessage(): rec for rec in caplog.records if rec.name == "adapter_registry.test"}
    assert by_message["searching"].request_id == "filter-1"  # type: ignore[attr-defined]
    assert by_message["between requests"].request_id == "-"  # type: ignore[attr-defined]
    assert current_request_id() is None
