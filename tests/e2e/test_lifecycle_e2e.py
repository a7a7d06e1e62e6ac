"""Deletion, the audit log and webhooks through the SDK client, the ``adapters`` command and the
real ``huggingface_hub`` client, against a registry process."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from e2e_server import Server
from test_cli import ok, ok_json, saved_adapter, tiny_config
from typer.testing import CliRunner

from sdk.cli import app
from sdk.client import Client
from sdk.errors import AdapterError


@pytest.fixture
def ns() -> str:
    return f"life-{uuid.uuid4().hex[:8]}"


def test_sdk_cli_and_hub_client_take_things_back(local_server: Server, ns: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    monkeypatch.setenv("ADAPTER_REGISTRY_CONFIG", str(tmp_path / "login.json"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    writer = local_server.token(ns, "read", "write")
    admin = local_server.token(ns, "admin")
    client = Client(local_server.url, writer, cache_dir=tmp_path / "cache")
    client.register_base_model(tiny_config(), f"{ns}/tiny-llama")
    for seed in (1, 2):
        client.push(saved_adapter(tmp_path / f"a{seed}", seed=seed), f"{ns}/a", f"{ns}/tiny-llama")
    # the SDK: yank, then the version answers with the reason
    body = client.yank(f"{ns}/a", 1, "trained on the wrong split")
    assert body["yanked"]["reason"] == "trained on the wrong split"
    with pytest.raises(AdapterError, match="wrong split"):
        client.pull(f"{ns}/a@1")
    assert client.info(f"{ns}/a")["aliases"]["latest"] == 2
    # the real Hub client sees 410 for the yanked revision, and can delete repos
    with pytest.raises(RevisionNotFoundError, match="wrong split") as gone:
        hf_hub_download(f"{ns}/a", "adapter_config.json", revision="1", endpoint=local_server.url, token=writer,
                        cache_dir=tmp_path / "hf")
    assert gone.value.response.status_code == 410
    hub = HfApi(endpoint=local_server.url)
    with pytest.raises(HfHubHTTPError) as caught:  # writers cannot delete repos
        hub.delete_repo(f"{ns}/a", token=writer)
    assert caught.value.response.status_code == 403
    hub.delete_repo(f"{ns}/a", token=admin)
    with pytest.raises(RepositoryNotFoundError):
        hub.model_info(f"{ns}/a", token=admin)
    hub.delete_repo(f"{ns}/a", token=admin, missing_ok=True)
    with pytest.raises(RepositoryNotFoundError):
        hub.delete_repo(f"{ns}/a", token=admin)
    # the CLI: yank a version, delete an adapter (confirmation asked), read the audit log
    opts = ["--url", local_server.url, "--token", admin]
    client.push(saved_adapter(tmp_path / "b1", seed=3), f"{ns}/b", f"{ns}/tiny-llama")
    client.push(saved_adapter(tmp_path / "b2", seed=4), f"{ns}/b", f"{ns}/tiny-llama")
    yanked = ok_json(*opts, "delete", f"{ns}/b@2", "--reason", "regression")
    assert yanked["version"] == 2 and yanked["yanked"]["reason"] == "regression"
    declined = CliRunner().invoke(app, [*opts, "delete", f"{ns}/b"], input="n\n")
    assert declined.exit_code == 1 and client.info(f"{ns}/b")["name"] == f"{ns}/b"
    assert "deleted" in ok(*opts, "delete", f"{ns}/b", "--yes").stdout
    refused = CliRunner().invoke(app, [*opts, "base-models", "rm", f"{ns}/tiny-llama", "--yes"])
    assert refused.exit_code == 0, refused.stdout + refused.stderr  # nothing depends on it any more
    events = ok_json(*opts, "events", ns, "--limit", "100")
    kinds = [e["kind"] for e in events]
    assert kinds[:4] == ["base-model.deleted", "adapter.deleted", "version.yanked", "push"], kinds
    assert "adapter.deleted" in kinds[4:] and kinds.count("push") == 4
    assert all(e["request_id"] for e in events)
    # webhooks from the CLI: the target rule applies (a loopback URL is refused by default)
    bad = CliRunner().invoke(app, [*opts, "webhooks", "create", ns, "http://127.0.0.1:9/hook"])
    assert bad.exit_code == 1 and "not a public address" in bad.stderr
    assert json.loads(ok("--json", *opts, "webhooks", "ls", ns).stdout) == []
