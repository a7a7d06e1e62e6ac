"""verified merges, serving compatibility, alias history, base licenses

Revision ID: 0010
Revises: 0012
Create Date: 2027-02-01 10:00:00

- ``adapter_version``: ``merge_check`` (a merge job's probe check of what it published), ``serving``
  (the serving-compatibility report, :mod:`sdk.serving_compat`), ``serves`` and ``max_lora_rank`` (the
  report's search keys), ``base_revision`` (the base model's weights revision it was validated against), ``license``
  (the adapter's own).
- ``merge_job.verification``: the check of any job's result (merged models too).
- ``base_model.license``.
- ``alias_move``: every move of an alias, kept. Existing aliases get one row each (where they point now,
  at their last update). Versions published before this revision get their report here, computed from the
  stored config and summary (``sdk.serving_compat.facts_from_summary``: targets by name, ranks from the
  config), in batches of 1000; their ``base_revision`` is the base model's revision as registered.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("adapter_version", sa.Column("merge_check", postgresql.JSONB(), nullable=True))
    op.add_column("adapter_version", sa.Column("serving", postgresql.JSONB(), nullable=True))
    op.add_column("adapter_version", sa.Column("serves", postgresql.ARRAY(sa.String(16)), nullable=True))
    op.add_column("adapter_version", sa.Column("max_lora_rank", sa.Integer(), nullable=True))
    op.add_column("adapter_version", sa.Column("base_revision", sa.String(128), nullable=True))
    op.add_column("adapter_version", sa.Column("license", sa.String(128), nullable=True))
    op.create_index("ix_adapter_version_serves", "adapter_version", ["serves"], postgresql_using="gin")
    op.add_column("merge_job", sa.Column("verification", postgresql.JSONB(), nullable=True))
    op.add_column("base_model", sa.Column("license", sa.String(128), nullable=True))
    op.execute("UPDATE adapter_version v SET base_revision = b.revision FROM adapter a JOIN base_model b "
               "ON b.id = a.base_model_id WHERE a.id = v.adapter_id")
    _backfill_reports()
    op.create_table(
        "alias_move",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("adapter_id", sa.Integer(), sa.ForeignKey("adapter.id", ondelete="CASCADE"), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("commit", sa.String(40), nullable=True),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column("moved_by", sa.String(128), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_alias_move_adapter_alias", "alias_move", ["adapter_id", "alias", "id"])
    op.execute("INSERT INTO alias_move (adapter_id, alias, version, commit, at) "
               "SELECT al.adapter_id, al.name, v.version, v.commit, al.updated_at FROM alias al "
               "JOIN adapter_version v ON v.id = al.version_id")


def _backfill_reports() -> None:
    import json

    bind = op.get_bind()
    if not bind.execute(sa.text("SELECT EXISTS (SELECT 1 FROM adapter_version)")).scalar():
        return  # a new database: nothing to compute (and the SDK need not be imported)
    from sdk.serving_compat import facts_from_summary, serving_report

    last = 0
    while True:
        rows = bind.execute(sa.text("SELECT id, config, summary FROM adapter_version WHERE id > :last ORDER BY id "
                                    "LIMIT 1000"), {"last": last}).all()
        if not rows:
            return
        for row_id, config, summary in rows:
            report = serving_report(facts_from_summary(config or {}, summary or {}))
            bind.execute(sa.text("UPDATE adapter_version SET serving = CAST(:report AS jsonb), serves = :serves, "
                                 "max_lora_rank = :rank WHERE id = :id"),
                         {"report": json.dumps(report), "serves": report["serves"], "rank": report["max_lora_rank"],
                          "id": row_id})
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_alias_move_adapter_alias", table_name="alias_move")
    op.drop_table("alias_move")
    op.drop_column("base_model", "license")
    op.drop_column("merge_job", "verification")
    op.drop_index("ix_adapter_version_serves", table_name="adapter_version")
    for column in ("license", "base_revision", "max_lora_rank", "serves", "serving", "merge_check"):
        op.drop_column("adapter_version", column)
