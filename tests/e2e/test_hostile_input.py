"""Hostile input never hurts: each request below answered 500 once; now each is a 4xx that names the
problem (RFC 9457 problem details on the API, the Hub's JSON errors on its routes, an error page for
people), and the service keeps working afterwards."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hostile_kit import ADAPTER, BASE, NS, Seeded, tiny_llama_config

BIG = str(2**40)  # a version number past PostgreSQL's 32-bit integer column
HUGE_PAGE = str(10**18)  # an offset past PostgreSQL's 64-bit bigint
LONG_RANGE = "bytes=" + "1" * 4301 + "-"  # one digit past what int() converts by default
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_CONFIG = '{"name": "alice/deep", "config": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}"
FILES = f"/api/v1/adapters/{ADAPTER}/versions/1/files/adapter_config.json"


def form_with_bad_utf8(field_name: str) -> tuple[bytes, dict[str, str]]:
    """A multipart form whose text field ``field_name`` holds bytes that are not UTF-8."""
    body = (f'--XX\r\nContent-Disposition: form-data; name="{field_name}"\r\n\r\n'.encode() + b"\xff\xfe\r\n"
            b'--XX\r\nContent-Disposition: form-data; name="next"\r\n\r\n/\r\n--XX--\r\n')
    return body, {"content-type": "multipart/form-data; boundary=XX"}


def hub_commit(header: Any) -> str:
    """An ndjson commit whose header value is ``header`` (the files are present, so parsing goes on)."""
    lines = [{"key": "header", "value": header},
             {"key": "file", "value": {"path": "adapter_config.json", "content": base64.b64encode(b"{}").decode()}},
             {"key": "file", "value": {"path": "adapter_model.safetensors",
                                       "content": base64.b64encode(b"12345678").decode()}}]
    return "\n".join(json.dumps(line) for line in lines)


@dataclass
class Row:
    """One hostile request: what is sent, the status it must get, and a word the error must say."""

    id: str
    method: str
    path: str
    status: int
    says: str = ""
    #: "problem" (problem+json), "hub" (the Hub's {"error"} JSON), "page" (an HTML error page)
    kind: str = "problem"
    kwargs: Callable[[Seeded], dict[str, Any]] = field(default=lambda s: {})


def config_with_nul(s: Seeded) -> dict[str, Any]:
    """A real push whose adapter_config.json carries a NUL character in a string PostgreSQL would store."""
    config = json.loads((s.adapter_dir / "adapter_config.json").read_text())
    config["revision"] = "main\x00"
    return {"files": {"adapter_config.json": json.dumps(config).encode(),
                      "adapter_model.safetensors": (s.adapter_dir / "adapter_model.safetensors").read_bytes()},
            "data": {"base_model": BASE}}


ROWS = [
    # version numbers: '²' is a digit to str.isdigit() but not to int(); 2**40 overflows the column
    Row("version-superscript-two", "GET", f"/api/v1/adapters/{ADAPTER}/versions/%C2%B2", 404, "²"),
    Row("version-2^40", "GET", f"/api/v1/adapters/{ADAPTER}/versions/{BIG}", 404, BIG),
    Row("version-2^40-file", "GET", f"/api/v1/adapters/{ADAPTER}/versions/{BIG}/files/adapter_config.json", 404),
    Row("version-2^40-lineage", "GET", f"/api/v1/adapters/{ADAPTER}/versions/{BIG}/lineage", 404),
    Row("hub-revision-2^40", "GET", f"/api/models/{ADAPTER}/revision/{BIG}", 404, kind="hub"),
    Row("hub-resolve-2^40", "GET", f"/{ADAPTER}/resolve/{BIG}/adapter_config.json", 404, kind="hub"),
    Row("alias-to-2^40", "PUT", f"/api/v1/adapters/{ADAPTER}/aliases/big", 400, "version",
        kwargs=lambda s: {"json": {"version": 2**40}}),
    Row("alias-to-superscript", "PUT", f"/api/v1/adapters/{ADAPTER}/aliases/big", 404, "²",
        kwargs=lambda s: {"json": {"version": "²"}}),
    # pages past any offset PostgreSQL can take
    Row("page-10^18-adapters", "GET", f"/api/v1/adapters?page={HUGE_PAGE}", 400, "page"),
    Row("page-10^18-base-models", "GET", f"/api/v1/base-models?page={HUGE_PAGE}", 400, "page"),
    Row("page-10^18-jobs", "GET", f"/api/v1/merge-jobs?page={HUGE_PAGE}", 400, "page"),
    Row("page-10^18-compatible", "GET", f"/api/v1/base-models/{BASE}/adapters?page={HUGE_PAGE}", 400, "page"),
    Row("page-10^18-web", "GET", f"/adapters?page={HUGE_PAGE}", 400, kind="page"),
    # NUL characters: PostgreSQL text cannot hold one
    Row("nul-q", "GET", "/api/v1/adapters?q=a%00b", 400, "NUL"),
    Row("nul-tag", "GET", "/api/v1/adapters?tag=a%00b", 400, "NUL"),
    Row("nul-method", "GET", "/api/v1/adapters?method=a%00b", 400, "NUL"),
    Row("nul-base-model", "GET", f"/api/v1/adapters?base_model={NS}/a%00b", 400, "NUL"),
    Row("nul-base-models-q", "GET", "/api/v1/base-models?q=a%00b", 400, "NUL"),
    Row("nul-namespace", "GET", "/api/v1/merge-jobs?namespace=a%00b", 400, "NUL"),
    Row("nul-version-ref", "GET", f"/api/v1/adapters/{ADAPTER}/versions/a%00b", 400, "NUL"),
    Row("nul-weights-filename", "GET", f"/api/v1/base-models/{BASE}/files/a%00b", 400, "NUL"),
    Row("nul-web-search", "GET", "/adapters?q=a%00b", 400, kind="page"),
    Row("nul-json-description", "PATCH", f"/api/v1/adapters/{ADAPTER}", 400, "NUL",
        kwargs=lambda s: {"json": {"description": "a\x00b"}}),
    Row("nul-json-tag", "PATCH", f"/api/v1/adapters/{ADAPTER}", 400, "NUL",
        kwargs=lambda s: {"json": {"tags": ["a\x00b"]}}),
    Row("nul-json-token-name", "POST", "/api/v1/tokens", 400, "NUL",
        kwargs=lambda s: {"json": {"namespace": NS, "name": "a\x00b"}}),
    Row("nul-json-revision", "POST", "/api/v1/base-models", 400, "NUL",
        kwargs=lambda s: {"json": {"name": f"{NS}/nul", "revision": "a\x00", "config": tiny_llama_config()}}),
    Row("nul-json-merge-ref", "POST", "/api/v1/merge-jobs", 400, "NUL",
        kwargs=lambda s: {"json": {"inputs": [{"ref": f"{ADAPTER}@a\x00"}], "output": {"adapter": f"{NS}/out"}}}),
    Row("nul-json-merge-description", "POST", "/api/v1/merge-jobs", 400, "NUL",
        kwargs=lambda s: {"json": {"inputs": [{"ref": ADAPTER}],
                                   "output": {"adapter": f"{NS}/out", "description": "a\x00"}}}),
    Row("nul-adapter-config", "POST", f"/api/v1/adapters/{NS}/nul-config/versions", 422, "NUL",
        kwargs=config_with_nul),
    # JSON nested deeper than anything real (the decoder gives up at the recursion limit)
    Row("deep-json-array", "POST", "/api/v1/base-models", 400, "deeper",
        kwargs=lambda s: {"content": DEEP_ARRAY, "headers": {"content-type": "application/json"}}),
    Row("deep-json-config", "POST", "/api/v1/base-models", 400, "deeper",
        kwargs=lambda s: {"content": DEEP_CONFIG, "headers": {"content-type": "application/json"}}),
    Row("deep-json-preupload", "POST", f"/api/models/{ADAPTER}/preupload/main", 400, "deeper", kind="hub",
        kwargs=lambda s: {"content": DEEP_ARRAY, "headers": {"content-type": "application/json"}}),
    # a Hub commit whose header is a list, not an object
    Row("hub-commit-header-list", "POST", f"/api/models/{ADAPTER}/commit/main", 422, "object", kind="hub",
        kwargs=lambda s: {"content": hub_commit(["x"])}),
    # part numbers outside S3's 1..10000
    Row("part-0", "PUT", "/api/v1/adapters/" + ADAPTER + "/uploads/{upload}/parts/0", 400, "part_number",
        kwargs=lambda s: {"content": b"x"}),
    Row("part-10001", "PUT", "/api/v1/adapters/" + ADAPTER + "/uploads/{upload}/parts/10001", 400, "part_number",
        kwargs=lambda s: {"content": b"x"}),
    # sizes and lengths past their columns
    Row("token-name-129", "POST", "/api/v1/tokens", 400, "name",
        kwargs=lambda s: {"json": {"namespace": NS, "name": "x" * 129}}),
    Row("token-expires-999999999-days", "POST", "/api/v1/tokens", 400, "expires_in_days",
        kwargs=lambda s: {"json": {"namespace": NS, "expires_in_days": 999_999_999}}),
    Row("revision-129", "POST", "/api/v1/base-models", 400, "revision",
        kwargs=lambda s: {"json": {"name": f"{NS}/rev", "revision": "r" * 129,
                                   "config": tiny_llama_config()}}),
    Row("upload-size-10^20", "POST", f"/api/v1/adapters/{ADAPTER}/uploads", 400, "size",
        kwargs=lambda s: {"json": {"size": 10**20}}),
    Row("weights-upload-size-10^20", "POST", f"/api/v1/base-models/{BASE}/uploads", 400, "size",
        kwargs=lambda s: {"json": {"filename": "model.safetensors", "size": 10**20, "sha256": "0" * 64}}),
    # a Range header with a number too long to convert
    Row("range-4301-digits", "GET", FILES, 416, "Range", kwargs=lambda s: {"headers": {"range": LONG_RANGE}}),
    Row("hub-range-4301-digits", "GET", f"/{ADAPTER}/resolve/main/adapter_config.json", 416, kind="hub",
        kwargs=lambda s: {"headers": {"range": LONG_RANGE}}),
    # form fields that are not UTF-8
    Row("sign-in-bad-utf8", "POST", "/sign-in", 400, kind="page",
        kwargs=lambda s: dict(zip(("content", "headers"), form_with_bad_utf8("token"), strict=True))),
    Row("push-form-bad-utf8", "POST", f"/api/v1/adapters/{ADAPTER}/versions", 400, "UTF-8",
        kwargs=lambda s: dict(zip(("content", "headers"), form_with_bad_utf8("description"), strict=True))),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_request_is_a_clear_4xx(seeded: Seeded, row: Row) -> None:
    with seeded.client() as http:
        r = http.request(row.method, row.path.replace("{upload}", seeded.upload_id), **row.kwargs(seeded))
        assert r.status_code == row.status, (r.status_code, r.text[:500])
        media = r.headers.get("content-type", "")
        if row.kind == "problem":
            assert media == "application/problem+json", media
            detail = r.json()
            assert detail["status"] == row.status
            text = json.dumps(detail, ensure_ascii=False)
        elif row.kind == "hub":
            assert media.startswith("application/json"), media
            assert r.headers.get("x-error-message")
            text = r.json()["error"]
        else:
            assert media.startswith("text/html"), media
            text = r.text
        assert row.says in text, text[:500]
        assert http.get("/api/v1/health").status_code == 200  # and the service is fine afterwards


def test_bounds_refuse_only_what_is_past_them(seeded: Seeded) -> None:
    """Just past each bound is a 400/404; just inside it works as before: the last page, the largest
    version number, a version given as a string, a Range end of 19 digits, a 128-character token name
    living a year (the default token_max_ttl_s)."""
    with seeded.client() as http:
        assert http.get("/api/v1/adapters", params={"page": 100_001}).status_code == 400
        assert http.get("/api/v1/adapters", params={"page": 100_000}).json()["items"] == []
        assert http.get(f"/api/v1/adapters/{ADAPTER}/versions/{2**31}").status_code == 404
        assert http.get(f"/api/v1/adapters/{ADAPTER}/versions/{2**31 - 1}").status_code == 404
        assert http.get(f"/api/v1/adapters/{ADAPTER}/versions/2").json()["version"] == 2
        r = http.put(f"/api/v1/adapters/{ADAPTER}/aliases/stable", json={"version": "2"})
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        assert http.get(FILES, headers={"range": "bytes=0-" + "9" * 20}).status_code == 416
        r = http.get(FILES, headers={"range": "bytes=0-" + "9" * 19})
        assert r.status_code == 206 and r.content == http.get(FILES).content
        assert http.post("/api/v1/tokens", json={"namespace": NS, "expires_in_days": 3651}).status_code == 400
        r = http.post("/api/v1/tokens", json={"namespace": NS, "expires_in_days": 366})  # past token_max_ttl_s
        assert r.status_code == 400 and "token_max_ttl_s" in r.json()["detail"], r.text
        r = http.post("/api/v1/tokens", json={"namespace": NS, "name": "x" * 128, "expires_in_days": 365})
        assert r.status_code == 201, r.text
        assert httpx.get(f"{seeded.url}/api/v1/whoami",
                         headers={"Authorization": f"Bearer {r.json()['token']}"}).json()["namespace"] == NS
