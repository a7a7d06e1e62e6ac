"""compositions: named, versioned combinations of adapter versions (stacked or Arrow-routed)

Revision ID: 0011
Revises: 0006
Create Date: 2026-12-03 12:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "composition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=96), nullable=False),
        sa.Column("name", sa.String(length=96), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("visibility", sa.String(length=8), nullable=False),
        sa.Column("next_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["base_model_id"], ["base_model.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace", "name"),
    )
    op.create_index("ix_composition_base_model_id", "composition", ["base_model_id"])
    op.create_table(
        "composition_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("composition_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("commit", sa.String(length=40), nullable=False),
        sa.Column("members", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("routing", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("prototypes", sa.LargeBinary(), nullable=True),
        sa.Column("prototypes_sha256", sa.String(length=64), nullable=True),
        sa.Column("prototypes_size", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["composition_id"], ["composition.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("commit"),
        sa.UniqueConstraint("composition_id", "version"),
    )
    op.create_table(
        "composition_alias",
        sa.Column("composition_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["composition_id"], ["composition.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_id"], ["composition_version.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("composition_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("composition_alias")
    op.drop_table("composition_version")
    op.drop_index("ix_composition_base_model_id", table_name="composition")
    op.drop_table("composition")
