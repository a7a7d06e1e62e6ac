"""Issue 15: web sign-in keeps a server-side session (the cookie never holds the API token), Secure
cookies over https, CSRF protection on the pages' forms, sign-out ends the session, and security
headers on pages. Through the app's real pages and forms (Litestar's test client keeps cookies)."""

from __future__ import annotations

import hashlib
import re

from registry_testkit import Registry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from registry_service.db.session import async_url
from registry_service.web.headers import CSP
from registry_service.web.session import COOKIE

CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


async def stored_sessions(reg: Registry) -> list[str]:
    engine = create_async_engine(async_url(reg.db_url))
    try:
        async with engine.connect() as conn:
            return [r[0] for r in await conn.execute(text("SELECT id_sha256 FROM web_session"))]
    finally:
        await engine.dispose()


async def sign_in_form(reg: Registry) -> str:
    """GET the sign-in page; the CSRF token its form carries."""
    page = await reg.client.get("/sign-in")
    assert page.status_code == 200
    m = CSRF_FIELD.search(page.text)
    assert m, page.text
    return m.group(1)


async def test_sign_in_keeps_a_session_id_not_the_token(local_registry: Registry) -> None:
    reg = local_registry
    c = reg.client
    token = await reg.token("alice", "read")
    csrf = await sign_in_form(reg)
    r = await c.post("/sign-in", data={"token": token, "next": "/adapters", "_csrf_token": csrf},
                     follow_redirects=False)
    assert r.status_code == 303, r.text
    set_cookie = r.headers["set-cookie"]
    session_id = c.cookies[COOKIE]
    assert token not in set_cookie and session_id and session_id != token
    assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie and "Secure" not in set_cookie
    assert "alice" in (await c.get("/")).text  # signed in
    # the session is stored as its id's sha256 only
    assert await stored_sessions(reg) == [hashlib.sha256(session_id.encode()).hexdigest()]
    # sign-out deletes the session: the old cookie no longer signs anyone in
    csrf = CSRF_FIELD.search((await c.get("/")).text).group(1)
    assert (await c.post("/sign-out", data={"_csrf_token": csrf}, follow_redirects=False)).status_code == 303
    assert await stored_sessions(reg) == []
    c.cookies.set(COOKIE, session_id)
    home = await c.get("/")
    assert "Sign in" in home.text and COOKIE in home.headers.get("set-cookie", "")  # the ended one is cleared


async def test_revoking_the_token_ends_its_sessions(local_registry: Registry) -> None:
    reg = local_registry
    c = reg.client
    made = (await c.post("/api/v1/tokens", json={"namespace": "alice", "scopes": ["read"]},
                         headers=reg.auth(reg.admin))).json()
    csrf = await sign_in_form(reg)
    r = await c.post("/sign-in", data={"token": made["token"], "_csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert "alice" in (await c.get("/")).text
    assert (await c.delete(f"/api/v1/tokens/{made['id']}", headers=reg.auth(reg.admin))).status_code == 200
    assert "Sign in" in (await c.get("/")).text


async def test_forms_need_their_csrf_token(local_registry: Registry) -> None:
    reg = local_registry
    c = reg.client
    token = await reg.token("alice", "read")
    await sign_in_form(reg)  # the CSRF cookie is set
    r = await c.post("/sign-in", data={"token": token})  # a form posted from another site has no token
    assert r.status_code == 403 and COOKIE not in c.cookies
    r = await c.post("/sign-in", data={"token": token, "_csrf_token": "forged"})
    assert r.status_code == 403
    # the bearer-token API is exempt
    assert (await c.post("/api/v1/tokens", json={"namespace": "bob"}, headers=reg.auth(reg.admin))).status_code == 201


async def test_secure_cookie_over_https(local_registry: Registry) -> None:
    """A request that came over https (behind a TLS-terminating proxy, uvicorn sets the scheme from
    X-Forwarded-Proto sent by a trusted proxy) gets a Secure cookie."""
    reg = local_registry
    reg.client.base_url = "https://testserver"
    token = await reg.token("alice", "read")
    csrf = await sign_in_form(reg)
    r = await reg.client.post("/sign-in", data={"token": token, "_csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


async def test_secure_cookie_when_the_public_url_is_https(registry_with) -> None:
    reg = await registry_with(public_url="https://hub.example")
    reg.client.base_url = "https://testserver"
    page = await reg.client.get("/sign-in")
    assert "Secure" in page.headers["set-cookie"]  # the CSRF cookie
    token = await reg.token("alice", "read")
    reg.client.base_url = "http://testserver"  # the proxy speaks plain http to the service
    reg.client.cookies.set("registry_csrf", page.cookies["registry_csrf"])
    r = await reg.client.post("/sign-in", data={"token": token, "_csrf_token": CSRF_FIELD.search(page.text).group(1)},
                              follow_redirects=False)
    assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


async def test_pages_send_security_headers(local_registry: Registry) -> None:
    c = local_registry.client
    for path in ("/", "/sign-in", "/adapters/nobody/nothing"):
        r = await c.get(path, headers={"Accept": "text/html"})
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"], path
    assert "x-frame-options" not in (await c.get("/api/v1/health")).headers
