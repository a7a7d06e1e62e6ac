"""Running the registry as a real process for end-to-end tests and benchmarks (a uniquely named
module, so tests and benchmarks import it without clashing with other ``conftest.py`` files)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running registry process."""

    url: str
    admin: str
    data_dir: Path
    process: subprocess.Popen
    bucket: str | None
    log: Path

    def token(self, namespace: str | None, *scopes: str) -> str:
        r = httpx.post(f"{self.url}/api/v1/tokens", json={"namespace": namespace, "scopes": list(scopes)},
                       headers={"Authorization": f"Bearer {self.admin}"})
        r.raise_for_status()
        return r.json()["token"]


def start_server(data_dir: Path, env: dict[str, str]) -> Server:
    """Start ``adapter-registry serve`` and wait for /api/v1/health."""
    port = _free_port()
    exe = shutil.which("adapter-registry", path=str(Path(sys.executable).parent)) or "adapter-registry"
    log = data_dir / "server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([exe, "serve", "--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"registry exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError(f"registry did not come up:\n{log.read_text()[-3000:]}")
    admin = (data_dir / "admin-token").read_text().strip()
    return Server(url, admin, data_dir, proc, env.get("ADAPTER_REGISTRY_S3_BUCKET"), log)


def stop_server(srv: Server) -> None:
    """Stop the process gracefully (its embedded PostgreSQL stops with it), or kill it."""
    srv.process.terminate()
    try:
        srv.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        srv.process.kill()
