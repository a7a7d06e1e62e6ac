"""merge jobs, and the job queue's own schema (procrastinate)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 14:00:00

The queue's tables and functions are procrastinate's ``schema.sql`` of the installed version,
applied once (skipped when ``procrastinate_jobs`` already exists, e.g. created by procrastinate's
own CLI). A later procrastinate upgrade that changes its schema gets its own revision here, which
runs the matching files of ``procrastinate/sql/migrations``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _apply_queue_schema() -> None:
    from procrastinate.schema import SchemaManager

    bind = op.get_bind()
    if bind.execute(sa.text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None:
        return
    # The schema holds '%' in PL/pgSQL strings: hand it to the driver untouched (no parameters).
    bind.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def upgrade() -> None:
    _apply_queue_schema()
    op.create_table(
        "merge_job",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("namespace", sa.String(length=96), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("inputs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("combination_type", sa.String(length=32), nullable=False),
        sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("queue_job_id", sa.BigInteger(), nullable=True),
        sa.Column("result_version_id", sa.Integer(), nullable=True),
        sa.Column("result_base_model_id", sa.Integer(), nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["base_model_id"], ["base_model.id"]),
        sa.ForeignKeyConstraint(["result_version_id"], ["adapter_version.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["result_base_model_id"], ["base_model.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["token_id"], ["api_token.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("namespace", "state", "base_model_id", "created_at"):
        op.create_index(op.f(f"ix_merge_job_{column}"), "merge_job", [column], unique=False)


def downgrade() -> None:
    for column in ("namespace", "state", "base_model_id", "created_at"):
        op.drop_index(op.f(f"ix_merge_job_{column}"), table_name="merge_job")
    op.drop_table("merge_job")
    # the queue's schema stays: it may hold other applications' jobs, and procrastinate owns it
