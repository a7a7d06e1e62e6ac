"""SQLAlchemy models: namespaces, tokens, base models (and their weight files), adapters, versions,
files, aliases, merge jobs, events.

Versions are immutable once published; ``adapter.next_version`` is the counter that concurrent
pushes increment under a row lock, so version numbers only grow and never repeat.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class Namespace(Base):
    """A user or an organisation; owns adapters, base models and tokens."""

    __tablename__ = "namespace"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(96), unique=True)
    kind: Mapped[str] = mapped_column(String(8), default="user")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiToken(Base):
    """A bearer token, stored only as its sha256. ``namespace`` NULL + ``admin`` = every namespace."""

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    namespace: Mapped[str | None] = mapped_column(String(96), nullable=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebSession(Base):
    """A signed-in browser: the cookie holds a random session id, stored here only as its sha256, and
    names the token it was opened with (a revoked or expired token ends it; sign-out deletes it)."""

    __tablename__ = "web_session"
    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_token.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class BaseModel(Base):
    """A registered base model and the signature adapters are validated against."""

    __tablename__ = "base_model"
    __table_args__ = (UniqueConstraint("namespace", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(96))
    name: Mapped[str] = mapped_column(String(96))
    revision: Mapped[str | None] = mapped_column(String(128), nullable=True)
    architecture: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    signature: Mapped[dict[str, Any]] = mapped_column(JSONB)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    #: the license of the weights (an SPDX id or a name such as ``llama3.1``); see ``Settings.restrictive_licenses``
    license: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BaseModelFile(Base):
    """A safetensors file of a base model's weights (sharded checkpoints have several); bytes by sha256."""

    __tablename__ = "base_model_file"
    __table_args__ = (UniqueConstraint("base_model_id", "filename"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_model.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(String(255))
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BaseModelUpload(Base):
    """A direct-to-storage upload of one large base-model weights file, finalized into a ``BaseModelFile``.

    Kept apart from :class:`UploadSession` (adapter uploads, addressed by adapter ``ns/name``) so a
    session of one kind can never be finalized through the other's routes.
    """

    __tablename__ = "base_model_upload"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_model.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    staging_key: Mapped[str] = mapped_column(String(255))
    storage_upload_id: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    part_size: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="open")
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: After this the session is refused (410); NULL only for sessions opened before expiry existed.
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Adapter(Base):
    """An adapter: ``ns/name``, the base model it fits, its method and presentation."""

    __tablename__ = "adapter"
    __table_args__ = (
        UniqueConstraint("namespace", "name"), Index("ix_adapter_tags", "tags", postgresql_using="gin"),
        # keyset paging of listings (migration 0008; trigram indexes for text search there too, when available)
        Index("ix_adapter_recent", text("updated_at DESC"), text("id DESC")),
        Index("ix_adapter_base_model_recent", "base_model_id", text("updated_at DESC"), text("id DESC")),
        Index("ix_adapter_method_recent", "method", text("updated_at DESC"), text("id DESC")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(96))
    name: Mapped[str] = mapped_column(String(96))
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_model.id"), index=True)
    method: Mapped[str] = mapped_column(String(32), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    visibility: Mapped[str] = mapped_column(String(8), default="public")
    next_version: Mapped[int] = mapped_column(Integer, default=1)
    #: Whole downloads of its weights, any version, any route (see ``domain.adapters.downloads``).
    downloads: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    base_model: Mapped[BaseModel] = relationship(lazy="joined")


class AdapterVersion(Base):
    """One immutable published version of an adapter."""

    __tablename__ = "adapter_version"
    __table_args__ = (UniqueConstraint("adapter_id", "version"),
                      Index("ix_adapter_version_serves", "serves", postgresql_using="gin"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapter.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    commit: Mapped[str] = mapped_column(String(40), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB)
    parents: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: ``{"metrics", "params", "dataset"}`` as ``sdk.provenance`` bounds them (empty: none recorded)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    #: what this version is (the adapter's own description is set by its first push and PATCH)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: a merge job's probe check of the published bytes (:mod:`sdk.merging.verify`)
    merge_check: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    #: the serving-compatibility report (:mod:`sdk.serving_compat`); NULL: published before 0010, computed on read
    serving: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    #: engines the report says load it (search key), and the ``--max-lora-rank`` vLLM needs
    serves: Mapped[list[str] | None] = mapped_column(ARRAY(String(16)), nullable=True)
    max_lora_rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: the base model's weights revision the version was validated against
    base_revision: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: the adapter's own license (push field ``license``, else the model card's ``license:``)
    license: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: Set when the version was yanked: it answers 410 with the reason and is out of ``latest``.
    yanked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    yanked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    yank_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Set when an admin purged the version: its file rows are gone (the blob collection frees the bytes).
    purged_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    files: Mapped[list[File]] = relationship(lazy="selectin", order_by="File.filename")


class File(Base):
    """A file of a version; the bytes live in the blob store under their sha256."""

    __tablename__ = "file"
    __table_args__ = (UniqueConstraint("version_id", "filename"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_version.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(String(255))


class Alias(Base):
    """A movable name for a version (``latest`` is kept by the service)."""

    __tablename__ = "alias"
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapter.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_version.id", ondelete="CASCADE"))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AliasMove(Base):
    """One move of an alias (kept for ever): where it pointed from then on; ``version`` NULL when removed."""

    __tablename__ = "alias_move"
    __table_args__ = (Index("ix_alias_move_adapter_alias", "adapter_id", "alias", "id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapter.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    commit: Mapped[str | None] = mapped_column(String(40), nullable=True)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    moved_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UploadSession(Base):
    """A direct-to-storage upload of one large file, finalized into a version."""

    __tablename__ = "upload_session"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    namespace: Mapped[str] = mapped_column(String(96))
    name: Mapped[str] = mapped_column(String(96))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: declared at finalize
    staging_key: Mapped[str] = mapped_column(String(255))
    storage_upload_id: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    part_size: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="open")
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: After this the session is refused (410); NULL only for sessions opened before expiry existed.
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MergeJob(Base):
    """A server-side merge: pinned inputs, the recipe, where it stands, and what it produced.

    Run by ``adapter-registry worker`` through procrastinate (``queue_job_id``); the result is
    recorded in the same transaction that publishes it, so a retried job never publishes twice.
    """

    __tablename__ = "merge_job"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    #: Namespace of the output: who may see and cancel the job.
    namespace: Mapped[str] = mapped_column(String(96), index=True)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    #: ``{"kind": "adapter"|"model", "name": "ns/name", "alias", "description", "private"}``
    output: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: One entry per input, pinned at submission: ``{"adapter", "version", "commit", "weight"}``.
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_model.id"), index=True)
    combination_type: Mapped[str] = mapped_column(String(32))
    #: density, majority_sign_method, svd_rank, svd_clamp, seed.
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    progress: Mapped[float] = mapped_column(default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    queue_job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_version.id", ondelete="SET NULL"), nullable=True)
    result_base_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("base_model.id", ondelete="SET NULL"), nullable=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_token.id", ondelete="SET NULL"), nullable=True)
    #: the probe check of the result before it was published (:mod:`sdk.merging.verify`)
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Composition(Base):
    """A named, versioned combination of adapter versions for one base model (``ns/name``, like an adapter)."""

    __tablename__ = "composition"
    __table_args__ = (UniqueConstraint("namespace", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(96))
    name: Mapped[str] = mapped_column(String(96))
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_model.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[str] = mapped_column(String(8), default="public")
    next_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    base_model: Mapped[BaseModel] = relationship(lazy="joined")


class CompositionVersion(Base):
    """One immutable version of a composition: members pinned by commit and how they combine.

    ``members``: ``[{"adapter": "ns/name", "version", "commit", "role": "task"|"general", "weight"}]``;
    ``routing``: ``{"kind": "stacked"}``, ``{"kind": "arrow", "top_k", "router_temperature", "use_gks",
    "rng_seed"}`` or ``{"kind": "router", "n_tasks", "n_splits"}``. ``prototypes`` holds the version's one
    stored file, with its sha256 and size: for Arrow every layer's prototypes (computed once, at publish), for
    a learned router its weights file (``poly_router.safetensors``, checked at publish); the name by kind is
    ``service.FILE_BY_KIND``.
    """

    __tablename__ = "composition_version"
    __table_args__ = (UniqueConstraint("composition_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    composition_id: Mapped[int] = mapped_column(ForeignKey("composition.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    commit: Mapped[str] = mapped_column(String(40), unique=True)
    members: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    routing: Mapped[dict[str, Any]] = mapped_column(JSONB)
    prototypes: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    prototypes_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prototypes_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CompositionAlias(Base):
    """A movable name for a composition version (``latest`` is kept by the service)."""

    __tablename__ = "composition_alias"
    composition_id: Mapped[int] = mapped_column(ForeignKey("composition.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("composition_version.id", ondelete="CASCADE"))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Event(Base):
    """Append-only audit log: every write (pushes, alias moves, deletions, tokens, jobs), with who
    made it (``actor``: the token's name, ``token_id``), where (``namespace``, ``adapter``) and in which
    request (``request_id``). Written through :func:`registry_service.domain.events.record_event`."""

    __tablename__ = "event"
    __table_args__ = (Index("ix_event_namespace_adapter_id", "namespace", "adapter", "id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    actor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    #: The token that made the change (no foreign key: the history outlives revoked tokens).
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    namespace: Mapped[str | None] = mapped_column(String(96), nullable=True)
    adapter: Mapped[str | None] = mapped_column(String(96), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)


class Webhook(Base):
    """A namespace's webhook: where events are POSTed, signed with ``secret`` (HMAC-SHA256)."""

    __tablename__ = "webhook"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(96), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(256))
    #: Event kinds sent (``["*"]``: all of them).
    events: Mapped[list[str]] = mapped_column(ARRAY(String(48)))
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookDelivery(Base):
    """One event sent (or being sent) to one webhook: ``pending``, ``delivered`` or ``failed``."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_webhook_id_id", "webhook_id", "id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhook.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


__all__ = [
    "Adapter", "AdapterVersion", "Alias", "AliasMove", "ApiToken", "Base", "BaseModel", "BaseModelFile",
    "BaseModelUpload", "Composition", "CompositionAlias", "CompositionVersion", "Event",
    "File", "MergeJob", "Namespace", "UploadSession", "WebSession", "Webhook", "WebhookDelivery", "_now",
]
