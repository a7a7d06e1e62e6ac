"""versions carry provenance

Revision ID: 0009
Revises: 0007
Create Date: 2027-02-01 10:00:00

Each adapter version records where it came from: ``provenance`` (``{"metrics", "params", "dataset"}``,
bounded by ``sdk.provenance``) and a free ``description`` of the version itself. Versions published
before this revision have neither.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("adapter_version", sa.Column("provenance", postgresql.JSONB(), nullable=False,
                                               server_default=sa.text("'{}'::jsonb")))
    op.add_column("adapter_version", sa.Column("description", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("adapter_version", "description")
    op.drop_column("adapter_version", "provenance")
