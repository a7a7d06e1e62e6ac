"""The ``adapters`` command line against a real registry process (and offline for ``check``)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from click.testing import Result
from e2e_server import Server
from typer.testing import CliRunner

import sdk
from sdk.cli import app
from sdk.client.http import Http

CLOSED = "http://127.0.0.1:1"  # nothing listens there


def tiny_config(hidden: int = 32) -> dict:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=100, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2).to_dict()


def saved_adapter(folder: Path, hidden: int = 32, seed: int = 1) -> Path:
    """A trained-looking (non-zero) LoRA adapter for a tiny Llama, saved in PEFT format."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    base = LlamaForCausalLM(LlamaConfig(**tiny_config(hidden)))
    sdk.get_peft_model(base, sdk.LoraConfig(r=4, init_lora_weights=False)).save_pretrained(folder)
    return folder


def cli(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def ok(*args: str | Path) -> Result:
    result = cli(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def ok_json(*args: str | Path) -> object:
    return json.loads(ok("--json", *args).stdout)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token, URL or login file from the developer's environment."""
    for var in ("ADAPTER_REGISTRY_URL", "ADAPTER_REGISTRY_TOKEN", "ADAPTER_REGISTRY_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ADAPTER_REGISTRY_CONFIG", str(tmp_path / "login.json"))
    monkeypatch.setenv("ADAPTER_REGISTRY_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base config.json (in a model folder), a fitting adapter and one for a wider model."""
    root = tmp_path_factory.mktemp("cli-files")
    (root / "base").mkdir()
    (root / "base" / "config.json").write_text(json.dumps(tiny_config()))
    return {"base_dir": root / "base", "config": root / "base" / "config.json",
            "good": saved_adapter(root / "good"), "good2": saved_adapter(root / "good2", seed=2),
            "wide": saved_adapter(root / "wide", hidden=48)}


@dataclass
class Published:
    """An adapter pushed twice to a fresh namespace."""

    ns: str
    token: str
    global_opts: list[str]
    name: str
    base: str
    first: dict
    second: dict


@pytest.fixture(scope="module")
def published(local_server: Server, files: dict[str, Path],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    ns = f"cli-{uuid.uuid4().hex[:8]}"
    token = local_server.token(ns, "read", "write")
    opts = ["--url", local_server.url, "--token", token, "--cache-dir", str(tmp_path_factory.mktemp("cli-cache"))]
    base, name = f"{ns}/tiny-llama", f"{ns}/helper"
    ok(*opts, "base-models", "register", base, "--config", files["config"])
    first = ok_json(*opts, "push", files["good"], name, "--base-model", base, "--tag", "chat", "--tag", "tiny",
                    "--description", "a helpful adapter", "--alias", "stable")
    second = ok_json(*opts, "push", files["good2"], name)  # the base model is the adapter's existing one
    yield Published(ns, token, opts, name, base, first, second)  # type: ignore[arg-type]


def test_login_saves_the_token_for_later_commands(local_server: Server, files: dict[str, Path],
                                                  tmp_path: Path) -> None:
    ns = f"cli-{uuid.uuid4().hex[:8]}"
    token = local_server.token(ns, "read", "write")
    result = cli("login", "--url", local_server.url, input=token + "\n")  # the token is prompted for
    assert result.exit_code == 0, (result.stdout, result.stderr)
    login_file = tmp_path / "login.json"
    assert str(login_file) in result.stdout
    assert token not in result.stdout
    assert json.loads(login_file.read_text()) == {"url": local_server.url, "token": token}
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600

    # no --url, no --token: both come from the login file
    body = ok_json("base-models", "register", f"{ns}/base", "--from-model-dir", files["base_dir"])
    assert body["name"] == f"{ns}/base" and body["model_type"] == "llama" and body["modules"] > 0
    names = [b["name"] for b in ok_json("base-models", "ls", "-q", ns)]  # type: ignore[union-attr]
    assert names == [f"{ns}/base"]
    shown = ok_json("base-models", "show", f"{ns}/base")
    assert shown["fingerprint"] == body["fingerprint"] and shown["signature"]["modules"]  # type: ignore[index]
    human = ok("base-models", "show", f"{ns}/base").stdout
    assert body["fingerprint"] in human and "Linear" in human
    assert f"{ns}/base" in ok("base-models", "ls").stdout

    bad = cli("login", "--url", local_server.url, "--token", "not-a-token")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: ") and "did not accept" in bad.stderr
    assert json.loads(login_file.read_text())["token"] == token  # a failed login keeps the old one


def test_whoami_tokens_and_logout(local_server: Server, tmp_path: Path) -> None:
    """`adapters whoami`, `tokens create|ls|revoke` (with --expires-in), `logout [--revoke]`."""
    ns = f"cli-{uuid.uuid4().hex[:8]}"
    admin = local_server.token(ns, "admin")
    assert cli("login", "--url", local_server.url, "--token", admin).exit_code == 0
    who = ok_json("whoami")
    assert who["namespace"] == ns and who["scopes"] == ["admin"] and who["expires_at"]  # type: ignore[index]
    made = ok_json("tokens", "create", "--namespace", ns, "--scope", "write", "--name", "ci", "--expires-in", "2h")
    assert made["token"].startswith("arg_") and made["expires_at"]  # type: ignore[index]
    human = ok("tokens", "ls").stdout
    assert "ci" in human and "write" in human and "active (this one)" in human
    bad = cli("tokens", "create", "--namespace", ns, "--expires-in", "5y")
    assert bad.exit_code == 2 and "is not a duration" in bad.stderr
    assert ok("tokens", "revoke", str(made["id"])).stdout.strip() == f"revoked token {made['id']}"  # type: ignore[index]
    gone = cli("--token", made["token"], "whoami")  # type: ignore[index]
    assert gone.exit_code == 1 and "revoked" in gone.stderr
    listed = ok_json("tokens", "ls", "--revoked")
    assert [t["revoked"] for t in listed if t["name"] == "ci"] == [True]  # type: ignore[union-attr, index]
    # logout --revoke: the token stops working everywhere, and the login file forgets it
    out = ok("logout", "--revoke").stdout
    assert "revoked token" in out and "removed the token" in out
    assert "token" not in json.loads((tmp_path / "login.json").read_text())
    r = httpx.get(f"{local_server.url}/api/v1/whoami", headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 401
    assert "anonymous" in ok("whoami").stdout


def test_base_models_register_needs_exactly_one_source(files: dict[str, Path]) -> None:
    result = cli("--url", CLOSED, "base-models", "register", "x/y")
    assert result.exit_code == 2
    result = cli("--url", CLOSED, "base-models", "register", "x/y", "--config", files["config"],
                 "--from-model-dir", files["base_dir"])
    assert result.exit_code == 2


def test_check_offline_against_a_config(files: dict[str, Path]) -> None:
    for base in (files["config"], files["base_dir"]):
        result = ok("--url", CLOSED, "check", files["good"], "--base-model", base)
        assert result.stdout.startswith("OK")

    bad = cli("--url", CLOSED, "check", files["wide"], "--base-model", files["config"])
    assert bad.exit_code == 1
    assert "(8 problems):" in bad.stdout and "q_proj.lora_A.weight: in_features is 48, expected 32" in bad.stdout
    assert "expected [4, 32], found [4, 48]" in bad.stdout

    body = json.loads(cli("--url", CLOSED, "--json", "check", files["wide"], "--base-model", files["config"]).stdout)
    assert body["ok"] is False and len(body["problems"]) == 8
    assert {"tensor", "expected", "found", "message"} <= set(body["problems"][0])
    assert json.loads(ok("check", files["good"], "--base-model", files["config"], "--json").stdout)["ok"] is True

    missing = cli("--url", CLOSED, "check", files["good"], "--base-model", files["base_dir"] / "nope.json")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: ")


def test_push_and_browse(published: Published, files: dict[str, Path]) -> None:
    p, opts = published, published.global_opts
    assert p.first["name"] == p.name and p.first["version"] == 1 and len(p.first["commit"]) == 40
    assert p.second["version"] == 2 and p.second["url"]

    # check against the registered base model (from the server)
    assert ok(*opts, "check", files["good"], "--base-model", p.base).stdout.startswith("OK")
    assert cli(*opts, "check", files["wide"], "--base-model", p.base).exit_code == 1

    info = ok_json(*opts, "info", p.name)
    assert info["base_model"] == p.base and info["versions"] == 2  # type: ignore[index]
    assert info["aliases"] == {"latest": 2, "stable": 1} and info["tags"] == ["chat", "tiny"]  # type: ignore[index]
    human = ok(*opts, "info", p.name).stdout
    assert "a helpful adapter" in human and "stable=1" in human

    versions = ok_json(*opts, "versions", p.name)
    assert [v["version"] for v in versions] == [2, 1]  # type: ignore[union-attr]
    assert versions[1]["aliases"] == ["stable"] and versions[1]["commit"] == p.first["commit"]  # type: ignore[index]
    assert p.first["commit"][:12] in ok(*opts, "versions", p.name).stdout

    def names(*filters: str) -> list[str]:
        return [a["name"] for a in ok_json(*opts, "ls", *filters)["items"]]  # type: ignore[index]

    assert names("--base-model", p.base) == [p.name]
    assert p.name in names("--tag", "chat", "--method", "lora", "-q", "helpful")
    assert names("--base-model", p.base, "--tag", "no-such-tag") == []
    assert p.name in ok(*opts, "ls", "--base-model", p.base).stdout

    moved = ok_json(*opts, "alias", "set", p.name, "prod", "2")
    assert moved == {"alias": "prod", "version": 2, "commit": p.second["commit"]}
    assert "@canary -> version 1" in ok(*opts, "alias", "set", p.name, "canary", p.first["commit"]).stdout
    assert ok_json(*opts, "info", p.name)["aliases"] == {  # type: ignore[index]
        "latest": 2, "stable": 1, "prod": 2, "canary": 1}
    ok(*opts, "alias", "rm", p.name, "canary")
    assert ok_json(*opts, "alias", "rm", p.name, "prod") == {"deleted": "prod"}
    assert ok_json(*opts, "info", p.name)["aliases"] == {"latest": 2, "stable": 1}  # type: ignore[index]
    gone = cli(*opts, "alias", "rm", p.name, "prod")
    assert gone.exit_code == 1 and "no alias" in gone.stderr
    history = ok_json(*opts, "alias", "history", p.name, "prod")
    assert [m["version"] for m in history["items"]] == [None, 2]  # type: ignore[index]
    assert "-> removed" in ok(*opts, "alias", "history", p.name, "prod").stdout
    pinned = ok_json(*opts, "pull", f"{p.name}@stable", "--expect-commit", p.first["commit"])
    assert pinned["commit"] == p.first["commit"]  # type: ignore[index]
    refused = cli(*opts, "pull", f"{p.name}@latest", "--expect-commit", p.first["commit"])
    assert refused.exit_code == 1 and "moved since it was pinned" in refused.stderr


def test_push_refused_lists_every_problem(published: Published, files: dict[str, Path]) -> None:
    result = cli(*published.global_opts, "push", files["wide"], f"{published.ns}/wide", "--base-model",
                 published.base)
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ") and len(lines) == 9
    assert all(line.startswith("  - ") for line in lines[1:])
    assert "found [4, 48]" in result.stderr and "Traceback" not in result.stderr


def test_pull_and_the_cache(published: Published, tmp_path: Path) -> None:
    opts = ["--url", published.global_opts[1], "--token", published.token, "--cache-dir", str(tmp_path / "c")]
    path = Path(ok(*opts, "pull", published.name).stdout.strip())
    assert sorted(f.name for f in path.iterdir()) == ["README.md", "adapter_config.json",
                                                      "adapter_model.safetensors"]
    assert path.name == published.second["commit"]
    old = ok_json(*opts, "pull", published.name, "--version", "stable")
    assert Path(old["path"]).name == published.first["commit"]  # type: ignore[index]
    assert "adapter_model.safetensors" in old["files"]  # type: ignore[index]
    assert Path(ok(*opts, "pull", f"{published.name}@1").stdout.strip()) == Path(old["path"])  # type: ignore[index]

    entries = ok_json(*opts, "cache", "ls")
    assert sorted((e["adapter"], e["version"]) for e in entries) == [  # type: ignore[union-attr]
        (published.name, 1), (published.name, 2)]
    human = ok(*opts, "cache", "ls")
    assert published.first["commit"][:12] in human.stdout and "2 snapshots" in human.stderr

    assert ok_json(*opts, "cache", "prune", "--older-than", "30")["snapshots"] == 0  # type: ignore[index]
    pruned = ok_json(*opts, "cache", "prune", "--all")
    assert pruned["snapshots"] == 2 and pruned["blobs"] >= 3 and pruned["bytes"] > 0  # type: ignore[index]
    assert ok_json(*opts, "cache", "ls") == [] and not path.exists()
    assert "empty" in ok(*opts, "cache", "ls").stderr


def test_errors_are_one_line(published: Published, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = cli(*published.global_opts, "info", f"{published.ns}/no-such-adapter")
    assert missing.exit_code == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    assert "404" in missing.stderr

    bad_ref = cli(*published.global_opts, "pull", "no-namespace")
    assert bad_ref.exit_code == 1 and "namespace/name" in bad_ref.stderr

    monkeypatch.setattr(Http, "sleep", lambda self, attempt: None)  # no backoff between retries
    down = cli("--url", CLOSED, "ls")
    assert down.exit_code == 3 and down.stderr.startswith("error: cannot reach the registry")

    assert cli("push").exit_code == 2  # usage errors are typer's: exit 2


def test_console_script(published: Published, tmp_path: Path) -> None:
    exe = shutil.which("adapters", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the adapters script is not installed (pip install -e .)")
    env = {**os.environ, "ADAPTER_REGISTRY_URL": published.global_opts[1],
           "ADAPTER_REGISTRY_TOKEN": published.token, "ADAPTER_REGISTRY_CACHE": str(tmp_path / "c")}
    proc = subprocess.run([exe, "info", f"{published.ns}/missing"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr

    proc = subprocess.run([exe, "pull", f"{published.name}@stable"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (Path(proc.stdout.strip()) / "adapter_config.json").is_file()  # `$(adapters pull …)` works
