"""upload sessions may leave the sha256 to finalize

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 19:45:00

A client that hashes its file while uploading it declares the sha256 when it finalizes, so an
open session may not know it yet.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("upload_session", "sha256", existing_type=sa.String(64), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE upload_session SET sha256 = '' WHERE sha256 IS NULL")
    op.alter_column("upload_session", "sha256", existing_type=sa.String(64), nullable=False)
