"""Issue 15, "Tokens have a life cycle": tokens are listed, revoked (refused at once) and expire
(a configurable default and maximum); the bootstrap admin token is shown only on a terminal."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from registry_testkit import Registry, sql

from registry_service.app import announce_admin_token, create_app
from registry_service.domain.auth.token_cache import TOKENS
from registry_service.settings import Settings, SettingsError
from registry_service.storage import LocalBlobStore
from sdk.durations import parse_duration


async def make(reg: Registry, token: str, **body: object) -> dict:
    r = await reg.client.post("/api/v1/tokens", json=body, headers=reg.auth(token))
    assert r.status_code == 201, r.text
    return r.json()


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


async def test_tokens_expire_by_default_within_the_maximum(registry_with) -> None:
    reg = await registry_with(token_default_ttl_s=3600, token_max_ttl_s=7200)
    now = dt.datetime.now(dt.UTC)
    made = await make(reg, reg.admin, namespace="alice", scopes=["read"])
    assert abs((_when(made["expires_at"]) - now).total_seconds() - 3600) < 60
    longer = await make(reg, reg.admin, namespace="alice", scopes=["read"], expires_in=7000)
    assert abs((_when(longer["expires_at"]) - now).total_seconds() - 7000) < 60
    for body in ({"expires_in": 7201}, {"expires_in": 0}, {"expires_in_days": 1}):
        r = await reg.client.post("/api/v1/tokens", json={"namespace": "alice"} | body, headers=reg.auth(reg.admin))
        assert r.status_code == 400 and "at most 7200 s" in r.json()["detail"], r.text
    who = (await reg.client.get("/api/v1/whoami", headers=reg.auth(made["token"]))).json()
    assert who["id"] == made["id"] and who["expires_at"] == made["expires_at"]
    # an expired token is refused at once (its expiry changed straight in the database, outside this
    # process: the token lookup cache would notice within its bound, token_cache.TOKEN_CACHE_SECONDS)
    await sql(reg, f"UPDATE api_token SET expires_at = now() - interval '1 second' WHERE id = {made['id']}")
    TOKENS.clear()
    r = await reg.client.get("/api/v1/whoami", headers=reg.auth(made["token"]))
    assert r.status_code == 401 and "expired" in r.json()["detail"]


async def test_no_maximum_allows_tokens_that_never_expire(registry_with) -> None:
    reg = await registry_with(token_max_ttl_s=0)
    assert (await make(reg, reg.admin, namespace="a", expires_in=0))["expires_at"] is None
    with pytest.raises(SettingsError, match="TOKEN_DEFAULT_TTL_S"):
        Settings.from_env(token_default_ttl_s=10, token_max_ttl_s=5)


async def test_list_and_revoke(local_registry: Registry) -> None:
    reg = local_registry
    c = reg.client
    alice_admin = (await make(reg, reg.admin, namespace="alice", scopes=["admin"], name="alice-admin"))
    alice_w = await make(reg, alice_admin["token"], namespace="alice", scopes=["write"], name="ci")
    bob_w = await make(reg, reg.admin, namespace="bob", scopes=["write"], name="bob-ci")

    async def listed(token: str, **params: str) -> list[str]:
        r = await c.get("/api/v1/tokens", params=params, headers=reg.auth(token))
        assert r.status_code == 200, r.text
        assert all("token" not in t for t in r.json()["items"])  # never the secret
        return sorted(t["name"] for t in r.json()["items"])

    assert await listed(alice_w["token"]) == ["ci"]  # a plain token sees itself
    assert await listed(alice_admin["token"]) == ["alice-admin", "ci"]  # a namespace admin, its namespace
    assert await listed(reg.admin, namespace="bob") == ["bob-ci"]
    assert "bootstrap-admin" in await listed(reg.admin)
    assert (await c.get("/api/v1/tokens")).status_code == 401
    # a namespace admin cannot revoke another namespace's token (it is not found for it)
    r = await c.delete(f"/api/v1/tokens/{bob_w['id']}", headers=reg.auth(alice_admin["token"]))
    assert r.status_code == 404
    r = await c.delete(f"/api/v1/tokens/{alice_w['id']}", headers=reg.auth(alice_admin["token"]))
    assert r.status_code == 200 and r.json() == {"id": alice_w["id"], "revoked": True}
    r = await c.get("/api/v1/whoami", headers=reg.auth(alice_w["token"]))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert await listed(alice_admin["token"]) == ["alice-admin"]
    assert await listed(alice_admin["token"], include_revoked="true") == ["alice-admin", "ci"]
    # a token revokes itself (what `adapters logout --revoke` does)
    assert (await c.delete(f"/api/v1/tokens/{bob_w['id']}", headers=reg.auth(bob_w["token"]))).status_code == 200
    assert (await c.get("/api/v1/whoami", headers=reg.auth(bob_w["token"]))).status_code == 401


def test_durations() -> None:
    assert parse_duration("90d") == 90 * 86400 and parse_duration("12h") == 43200 and parse_duration("3600") == 3600
    assert parse_duration("never") is None
    for bad in ("0", "-1d", "1y", "", "1.5h"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bootstrap_token_is_shown_only_on_a_terminal(tmp_path: Path) -> None:
    logged, terminal = io.StringIO(), _Terminal()
    announce_admin_token("arg_secret", tmp_path / "admin-token", logged)
    announce_admin_token("arg_secret", tmp_path / "admin-token", terminal)
    assert "arg_secret" not in logged.getvalue() and str(tmp_path / "admin-token") in logged.getvalue()
    assert "arg_secret" in terminal.getvalue()


async def test_the_service_does_not_print_the_bootstrap_token_into_its_log(db_url: str, tmp_path: Path,
                                                                           capfd: pytest.CaptureFixture[str]) -> None:
    """stdout is a pipe here, as under a process manager: the token goes to its file only."""
    settings = Settings(data_dir=tmp_path, database_url=db_url, apply_migrations=False)
    async with AsyncTestClient(app=create_app(settings, store=LocalBlobStore(tmp_path / "blobs"))) as client:
        assert (await client.get("/livez")).status_code == 200
    token = (tmp_path / "admin-token").read_text().strip()
    out, err = capfd.readouterr()
    assert token.startswith("arg_") and token not in out + err
    assert "Created an admin token; it is in" in out


def test_the_token_command_takes_expires_in(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from typer.testing import CliRunner

    from registry_service.cli import app
    from registry_service.db.session import async_url

    monkeypatch.setenv("ADAPTER_REGISTRY_DATABASE_URL", db_url)
    monkeypatch.setenv("ADAPTER_REGISTRY_APPLY_MIGRATIONS", "false")
    run = CliRunner().invoke
    made = run(app, ["token", "--namespace", "alice", "--scope", "write", "--expires-in", "2h",
                     "--data-dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()

    async def seconds_left() -> float:
        engine = create_async_engine(async_url(db_url))
        try:
            async with engine.connect() as conn:
                return float((await conn.execute(text("SELECT extract(epoch FROM expires_at - now()) FROM api_token "
                                                      "WHERE namespace = 'alice'"))).scalar_one())
        finally:
            await engine.dispose()

    left = asyncio.run(seconds_left())
    assert token.startswith("arg_") and 7100 < float(left) <= 7200
    for bad, says in (("5y", "is not a duration"), ("never", "token_max_ttl_s")):
        refused = run(app, ["token", "--namespace", "alice", "--expires-in", bad, "--data-dir", str(tmp_path)])
        assert refused.exit_code == 2 and says in refused.output, refused.output
