"""indexes for search and keyset paging

Revision ID: 0008
Revises: 0009
Create Date: 2026-12-03 12:30:00

Listings page by keyset over ``(updated_at DESC, id DESC)``: one index for all adapters, and one per
base model and per method so that a filtered page is an index range too. Text search (``ILIKE``
on namespace, name and description) is served by trigram indexes when the ``pg_trgm`` extension
can be created (PostgreSQL's contrib; an embedded server without it searches text by a scan).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0009"
branch_labels = None
depends_on = None

RECENT = [sa.text("updated_at DESC"), sa.text("id DESC")]
TRIGRAM_COLUMNS = ("namespace", "name", "description")


def upgrade() -> None:
    op.create_index("ix_adapter_recent", "adapter", RECENT)
    op.create_index("ix_adapter_base_model_recent", "adapter", [sa.text("base_model_id"), *RECENT])
    op.create_index("ix_adapter_method_recent", "adapter", [sa.text("method"), *RECENT])
    indexes = "; ".join(f"CREATE INDEX IF NOT EXISTS ix_adapter_{c}_trgm ON adapter USING gin ({c} gin_trgm_ops)"
                        for c in TRIGRAM_COLUMNS)
    op.execute(f"""
        DO $$
        BEGIN
            BEGIN
                CREATE EXTENSION IF NOT EXISTS pg_trgm;
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'pg_trgm is not available (%): text search is not indexed', SQLERRM;
            END;
            IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
                {indexes};
            END IF;
        END $$;
    """)


def downgrade() -> None:
    for c in TRIGRAM_COLUMNS:
        op.execute(f"DROP INDEX IF EXISTS ix_adapter_{c}_trgm")
    for name in ("ix_adapter_method_recent", "ix_adapter_base_model_recent", "ix_adapter_recent"):
        op.drop_index(name, table_name="adapter")
