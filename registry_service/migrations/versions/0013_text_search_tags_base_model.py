"""text search over tags and base model names, indexable

Revision ID: 0013
Revises: 0008
Create Date: 2027-02-02 10:00:00

Text search matches each word (``ILIKE '%word%'``) in an adapter's namespace, name, description, tags
and its base model's ``ns/name``. Migration 0008 indexed the first three with trigrams (where
``pg_trgm`` exists); the query's other two arms (``array_to_string(tags)``, which PostgreSQL cannot
index, being only STABLE, and a column of the joined base model) left the planner no choice but a
scan of every adapter. Now:

- ``adapter_tags_text(tags)``: the tags as one text, an IMMUTABLE SQL function (``array_to_string``
  of ``text[]`` depends on no setting), which the search uses instead and which can be indexed;
- where ``pg_trgm`` exists, trigram indexes on it and on ``base_model``'s ``namespace || '/' || name``;
  the search looks the base model up as ``base_model_id = ANY(…)``, which the adapter's
  ``(base_model_id, …)`` index serves, so every arm of a word's condition is an index scan.

The search's results are the same: only how they are found changes.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE OR REPLACE FUNCTION adapter_tags_text(tags text[]) RETURNS text "
               "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT array_to_string(tags, ' ') $$")
    op.execute("""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
                CREATE INDEX IF NOT EXISTS ix_adapter_tags_trgm ON adapter
                    USING gin (adapter_tags_text(tags) gin_trgm_ops);
                CREATE INDEX IF NOT EXISTS ix_base_model_full_name_trgm ON base_model
                    USING gin ((namespace || '/' || name) gin_trgm_ops);
            END IF;
        END $$;
    """)


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_base_model_full_name_trgm")
    op.execute("DROP INDEX IF EXISTS ix_adapter_tags_trgm")
    op.execute("DROP FUNCTION IF EXISTS adapter_tags_text(text[])")
