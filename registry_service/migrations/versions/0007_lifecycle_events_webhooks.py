"""yanked and purged versions, audit event columns, webhooks and their deliveries

Revision ID: 0007
Revises: 0010
Create Date: 2027-01-20 12:00:00

- ``adapter_version``: ``yanked_at``/``yanked_by``/``yank_reason`` (a yanked version answers 410
  and is out of ``latest``) and ``purged_at`` (its files were removed by an admin).
- ``event``: who (``token_id``), where (``namespace``, ``adapter``) and which request
  (``request_id``), for ``GET /api/v1/events`` and the adapter page's activity list.
- ``webhook`` (per namespace: URL, secret, which events) and ``webhook_delivery`` (one row per
  event sent to a webhook: state, attempts, last answer).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("adapter_version", sa.Column("yanked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("adapter_version", sa.Column("yanked_by", sa.String(128), nullable=True))
    op.add_column("adapter_version", sa.Column("yank_reason", sa.Text(), nullable=True))
    op.add_column("adapter_version", sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("event", sa.Column("token_id", sa.Integer(), nullable=True))
    op.add_column("event", sa.Column("namespace", sa.String(96), nullable=True))
    op.add_column("event", sa.Column("adapter", sa.String(96), nullable=True))
    op.add_column("event", sa.Column("request_id", sa.String(128), nullable=True))
    op.create_index("ix_event_namespace_adapter_id", "event", ["namespace", "adapter", "id"])
    op.create_table(
        "webhook",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("namespace", sa.String(96), nullable=False, index=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(256), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.String(48)), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("webhook_id", sa.Integer(), sa.ForeignKey("webhook.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", sa.BigInteger(), sa.ForeignKey("event.id", ondelete="CASCADE"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_webhook_delivery_webhook_id_id", "webhook_delivery", ["webhook_id", "id"])


def downgrade() -> None:
    op.drop_table("webhook_delivery")
    op.drop_table("webhook")
    op.drop_index("ix_event_namespace_adapter_id", table_name="event")
    for column in ("request_id", "adapter", "namespace", "token_id"):
        op.drop_column("event", column)
    for column in ("purged_at", "yank_reason", "yanked_by", "yanked_at"):
        op.drop_column("adapter_version", column)
