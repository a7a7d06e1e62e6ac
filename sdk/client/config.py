"""Where the client talks to and with which token: arguments, environment, or ``adapters login``.

Order: explicit arguments, then ``ADAPTER_REGISTRY_URL`` / ``ADAPTER_REGISTRY_TOKEN`` /
``ADAPTER_REGISTRY_CACHE``, then the config file written by ``adapters login``
(``$ADAPTER_REGISTRY_CONFIG`` or ``~/.config/adapter-registry/config.json``), then defaults.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    """The login file."""
    env = os.environ.get("ADAPTER_REGISTRY_CONFIG")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "adapter-registry" / "config.json"


def default_cache_dir() -> Path:
    """``$ADAPTER_REGISTRY_CACHE``, else ``$XDG_CACHE_HOME/adapter-registry`` (``~/.cache/…``)."""
    env = os.environ.get("ADAPTER_REGISTRY_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "adapter-registry"


def _saved() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class ClientConfig:
    """Resolved client settings."""

    url: str
    token: str | None
    cache_dir: Path

    @classmethod
    def resolve(cls, url: str | None = None, token: str | None = None, cache_dir: str | Path | None = None
                ) -> ClientConfig:
        """Apply the precedence rules above."""
        saved = _saved()
        final_url = url or os.environ.get("ADAPTER_REGISTRY_URL") or saved.get("url") or DEFAULT_URL
        final_token = token or os.environ.get("ADAPTER_REGISTRY_TOKEN") or None
        same_registry = saved.get("url", DEFAULT_URL).rstrip("/") == final_url.rstrip("/")
        if final_token is None and saved.get("token") and same_registry:
            final_token = saved["token"]
        return cls(final_url.rstrip("/"), final_token, Path(cache_dir) if cache_dir else default_cache_dir())


def save_login(url: str, token: str) -> Path:
    """Write the login file (mode 600) and return its path."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"url": url.rstrip("/"), "token": token}, fh)
    os.chmod(path, 0o600)
    return path


def forget_login() -> Path | None:
    """Remove the token from the login file (the URL stays); the file's path, or None when it held no token."""
    path = config_path()
    saved = _saved()
    if "token" not in saved:
        return None
    del saved["token"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(saved, fh)
    return path
