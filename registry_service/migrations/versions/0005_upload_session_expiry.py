"""upload sessions expire

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10 10:00:00

An upload session is refused once its ``expires_at`` has passed (``Settings.upload_session_ttl_s``
after it opened). Sessions opened before this revision get a day from their start.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("upload_session", "base_model_upload")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        op.execute(f"UPDATE {table} SET expires_at = created_at + interval '1 day'")


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "expires_at")
