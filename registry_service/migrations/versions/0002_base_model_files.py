"""base model weight files and their upload sessions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 12:02:00.975152
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "base_model_file",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["base_model_id"], ["base_model.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("base_model_id", "filename"),
    )
    op.create_index(op.f("ix_base_model_file_base_model_id"), "base_model_file", ["base_model_id"], unique=False)
    op.create_index(op.f("ix_base_model_file_sha256"), "base_model_file", ["sha256"], unique=False)
    op.create_table(
        "base_model_upload",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("staging_key", sa.String(length=255), nullable=False),
        sa.Column("storage_upload_id", sa.String(length=1024), nullable=True),
        sa.Column("part_size", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["base_model_id"], ["base_model.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_base_model_upload_base_model_id"), "base_model_upload", ["base_model_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_base_model_upload_base_model_id"), table_name="base_model_upload")
    op.drop_table("base_model_upload")
    op.drop_index(op.f("ix_base_model_file_sha256"), table_name="base_model_file")
    op.drop_index(op.f("ix_base_model_file_base_model_id"), table_name="base_model_file")
    op.drop_table("base_model_file")
