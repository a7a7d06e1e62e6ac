"""adapter download counts

Revision ID: 0012
Revises: 0011
Create Date: 2027-02-01 10:00:00

``adapter.downloads`` counts whole downloads of an adapter's weights (any version, through the API,
the Hub-compatible API or the web pages), so lists can be sorted by it. Existing adapters start at 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("adapter", sa.Column("downloads", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("adapter", "downloads")
