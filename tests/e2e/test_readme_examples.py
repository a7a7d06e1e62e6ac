"""The README's quickstart runs: every block marked ``<!-- readme-test -->`` (Python and shell), in order,
against a live registry process (embedded PostgreSQL, local blobs) and a merge worker. The registry's
address and data directory stand in for the README's ``http://127.0.0.1:8000`` and ``./registry-data``;
the login file, caches and huggingface_hub's home are the test's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from web_jobs_kit import WorkerPool

import sdk

if TYPE_CHECKING:
    from e2e_server import Server

README = Path(__file__).resolve().parents[2] / "README.md"
MARKED = re.compile(r"^<!-- readme-test -->\n```(\w+)\n(.*?)^```", re.M | re.S)


def marked_blocks() -> list[tuple[str, str, int]]:
    """``(language, code, line)`` of every marked block, in README order."""
    text = README.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2), text[: m.start()].count("\n") + 3) for m in MARKED.finditer(text)]


def test_the_quickstart_is_marked_in_order() -> None:
    blocks = marked_blocks()
    assert [lang for lang, _, _ in blocks] == ["bash", "python", "bash", "python"]
    joined = "\n".join(code for _, code, _ in blocks)
    for step in ("adapters login", "sdk.train", "sdk.push", "curl", "adapters pull", "from_pretrained",
                 "merge_and_unload", "sdk.merge"):
        assert step in joined, step


def test_the_readme_quickstart_runs_against_a_live_registry(local_server: Server, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    workers = WorkerPool.start(local_server, tmp_path / "workers", env={"ADAPTER_REGISTRY_WORKER_STEP_DELAY_S": "0"})
    try:
        env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "ADAPTER_REGISTRY_CACHE": str(tmp_path / "cache"),
               "HF_HOME": str(tmp_path / "hf")}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for key in ("ADAPTER_REGISTRY_URL", "ADAPTER_REGISTRY_TOKEN", "ADAPTER_REGISTRY_CONFIG"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setattr(constants, "HF_HOME", env["HF_HOME"])
        monkeypatch.setattr(sdk, "_default_client", None)
        monkeypatch.chdir(tmp_path)
        shell_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        namespace: dict[str, Any] = {"__name__": "readme"}
        outputs = []
        workers.ready()
        for lang, code, line in marked_blocks():
            code = code.replace("http://127.0.0.1:8000", local_server.url)
            code = code.replace("./registry-data", str(local_server.data_dir))
            if lang == "bash":
                done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], env=shell_env, cwd=tmp_path,
                                      capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, f"README.md:{line}\n{code}\n{done.stdout}\n{done.stderr}"
                outputs.append(done.stdout)
            else:
                exec(compile(code, f"README.md:{line}", "exec"), namespace)  # our own README
        login = tmp_path / "config" / "adapter-registry" / "config.json"
        assert login.is_file() and oct(login.stat().st_mode & 0o777) == "0o600"
        pushed = namespace["pushed"]
        assert pushed.name == "demo/chat" and pushed.version == 1 and pushed.url.endswith("/adapters/demo/chat")
        version = namespace["sdk"].default_client().http.json("GET", "/api/v1/adapters/demo/chat/versions/prod")
        assert version["dataset"]["name"] == "random-tokens" and "eval_loss" in version["metrics"]
        pulled = Path(outputs[1].strip().splitlines()[-1])
        assert (pulled / "adapter_model.safetensors").is_file()
        assert type(namespace["plain"]).__name__ == "LlamaForCausalLM"
        job = namespace["job"]
        assert job.state == "succeeded", job
        assert job.result and job.result.get("adapter") == "demo/chat-half"
        assert not workers.tracebacks()
    finally:
        workers.stop()
