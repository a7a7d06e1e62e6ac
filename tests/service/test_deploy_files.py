"""The deployment files, checked without Docker (none runs here): docker-compose.yml parses and runs two
API replicas and two workers behind one published port, every variable it sets is a setting whose value
validates, nginx.conf serves that port from the replicas, and the Dockerfile copies only what exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry_service.settings import Settings, WorkerSettings, unknown_variables

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def test_two_api_replicas_and_two_workers_behind_one_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["registry"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["registry"]["command"] == ["adapter-registry", "serve"]
    assert services["worker"]["command"] == ["adapter-registry", "worker"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert [p for p in published.get("proxy", [])] == ["8000:8000"]
    assert "registry" not in published and "worker" not in published  # replicas share no host port
    health = " ".join(services["registry"]["healthcheck"]["test"])
    assert "/readyz" in health and "8000" in health
    assert services["proxy"]["depends_on"]["registry"]["condition"] == "service_healthy"
    assert services["registry"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["migrate", "registry", "worker"])
def test_every_variable_is_a_setting_and_validates(compose: dict[str, Any], name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(compose["services"][name])
    assert env["ADAPTER_REGISTRY_DATABASE_URL"].startswith("postgresql://")
    assert unknown_variables(env) == []
    import os

    for var in list(os.environ):
        if var.startswith("ADAPTER_REGISTRY_"):
            monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = Settings.from_env()
    WorkerSettings.from_env()
    assert settings.uses_s3 and not settings.embedded_database
    if name == "registry":
        assert (settings.host, settings.port) == ("0.0.0.0", 8000)
        stop = compose["services"]["registry"]["stop_grace_period"]
        assert int(stop.rstrip("s")) > settings.graceful_shutdown_s  # Docker waits for requests in flight


def test_nginx_serves_the_published_port_from_the_replicas() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"listen\s+8000;", conf)
    assert re.search(r"server\s+registry:8000\b", conf)
    assert "proxy_pass http://registry;" in conf
    assert "X-Request-ID" in conf and "X-Forwarded-For" in conf


def test_the_dockerfile_copies_what_exists_and_installs_the_server_extra() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    text = "\n".join(lines)
    assert '".[server]"' in text and "torch==2.13.0" in text
    assert re.search(r'CMD \["adapter-registry", "serve"\]', text)
