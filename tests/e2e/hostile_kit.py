"""A registry with a little real content for hostile-input and schema-fuzzing tests: its own process on
the embedded default (so what these tests write and break touches no other test), a base model, a
public adapter with two versions and an alias, a private adapter, and an open upload session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from e2e_server import Server
from test_client import saved_adapter

from sdk.client import Client

NS = "alice"
BASE = f"{NS}/tiny-llama"
ADAPTER = f"{NS}/chat"
PRIVATE = f"{NS}/secret"


def tiny_llama_config() -> dict:
    """``config.json`` of test_client's tiny llama (the adapters of ``saved_adapter`` fit it)."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return cfg.to_dict() | {"architectures": ["LlamaForCausalLM"]}


@dataclass
class Seeded:
    """The server and what was put in it."""

    server: Server
    upload_id: str  # an open upload session of ADAPTER
    commit: str  # version 1's commit
    adapter_dir: Path  # version 1's files

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> httpx.Client:
        """An HTTP client with the admin token."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.server.admin}"}, timeout=60)


def seed(server: Server, tmp: Path) -> Seeded:
    """Register BASE, push two versions of ADAPTER (alias ``prod`` on 1) and PRIVATE, open an upload."""
    with Client(server.url, server.admin, cache_dir=tmp / "cache", quiet=True) as c:
        c.register_base_model(tiny_llama_config(), BASE)
        first = c.push(saved_adapter(tmp / "a1", "llama", 1), ADAPTER, BASE, alias="prod", tags=["chat"])
        c.push(saved_adapter(tmp / "a2", "llama", 2), ADAPTER, BASE)
        c.push(saved_adapter(tmp / "a1", "llama", 1), PRIVATE, BASE, private=True)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"}) as h:
        r = h.post(f"/api/v1/adapters/{ADAPTER}/uploads", json={"size": 100})
        r.raise_for_status()
        upload_id = r.json()["id"]
    return Seeded(server, upload_id, first.commit, tmp / "a1")
